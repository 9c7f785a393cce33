"""TFLite latency (LiteRT, XNNPACK): every exported variant, and the streaming model at other sizes."""
import json
import os

import numpy as np

from sora_tf.bench.report import COMMAND, timeit


def bench_tflite(export_dir, val_clips=None, repeat=20):
    """Per-clip latency of each TFLite variant at 1 and 2 threads (XNNPACK), file size, and
    accuracy from parity.json; streaming per-frame latency."""
    from sora_tf.export.runtime import TFLiteClip, TFLiteStream

    parity = {p["artifact"]: p for p in json.load(open(os.path.join(export_dir, "parity.json")))}
    rows = []
    for name in sorted(os.listdir(export_dir)):
        if not name.endswith(".tflite"):
            continue
        path = os.path.join(export_dir, name)
        row = {"file": name, "bytes": os.path.getsize(path),
               "accuracy": parity.get(f"tflite_{name[:-7]}", {}).get("accuracy"),
               "top1_agreement": parity.get(f"tflite_{name[:-7]}", {}).get("top1_agreement")}
        for threads in (1, 2):
            if name.startswith("stream_"):
                model = TFLiteStream(path, threads)
                frame = np.random.default_rng(0).uniform(0, 255, (model.image_size,) * 2 + (3,))
                row[f"ms_per_frame_{threads}t"] = timeit(lambda: model.step(frame), repeat * 10)[0] * 1e3
            else:
                model = TFLiteClip(path, threads)
                clip = np.random.default_rng(0).integers(0, 256, (model.num_frames, model.image_size,
                                                                  model.image_size, 3), dtype=np.uint8)
                row[f"ms_per_clip_{threads}t"] = timeit(lambda: model.predict(clip), repeat)[0] * 1e3
        row["command"] = f"{COMMAND} --only tflite --export {export_dir}"
        rows.append(row)
    return rows


MOVINET = os.path.join("..", "shared", "data", "anchors", "movinet_a0_stream_172.tflite")


class MoViNetStream:
    """MoViNet-A0-Stream as the Model Garden exports it: one [1, 1, S, S, 3] frame in [0, 1] and its
    43 state tensors per call, the states fed back as a stream does (random weights: timing only)."""

    def __init__(self, path, threads=1):
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(path, num_threads=threads)
        self.runner = interpreter.get_signature_runner()
        inputs = interpreter.get_signature_list()["serving_default"]["inputs"]
        details = {d["name"]: d for d in interpreter.get_input_details()}
        spec = {name: details[f"serving_default_{name}:0"] for name in inputs}
        self.size = int(spec["image"]["shape"][2])
        self.state = {k: np.zeros(d["shape"], d["dtype"]) for k, d in spec.items() if k != "image"}

    def step(self, frame):
        out = self.runner(image=np.asarray(frame, np.float32)[None, None] / 255.0, **self.state)
        self.state = {k: out[k] for k in self.state}
        return out["logits"]


def bench_stream_vs_movinet(recipes, rounds=5, steps=40, movinet=MOVINET):
    """Streaming per-frame latency at MoViNet's input size (172), float32, 1 thread, random
    weights: each sora_cls recipe ({name: Config}) beside MoViNet-A0-Stream, timed in interleaved
    rounds in this process so that the machine's load falls on both alike; the ratio is the
    median of the rounds' ratios."""
    import dataclasses
    import tempfile

    from sora_tf.export.classify import export_tflite
    from sora_tf.export.runtime import TFLiteStream
    from sora_tf.models import sora_cls

    if not os.path.isfile(movinet):
        return [{"figure": "MoViNet-A0-Stream", "skipped": f"{movinet} is absent (it is in ../shared)",
                 "command": f"{COMMAND} --only stream"}]
    runners = {"MoViNet-A0-Stream": MoViNetStream(movinet, 1)}
    size = runners["MoViNet-A0-Stream"].size
    frame = np.random.default_rng(0).uniform(0, 255, (size, size, 3)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        for name, config in recipes.items():
            cfg = dataclasses.replace(config, image_size=size)
            clips = np.random.default_rng(0).uniform(0, 255, (2, cfg.num_frames, size, size, 3))
            paths = export_tflite(sora_cls.build(cfg), [str(i) for i in range(cfg.num_classes)],
                                  os.path.join(tmp, name), clips, variants=(), stream_variants=("float32",))
            runners[name] = TFLiteStream(paths["stream_float32"], 1)
    times = {name: [] for name in runners}
    for _ in range(rounds):
        for name, runner in runners.items():
            times[name].append(timeit(lambda: runner.step(frame), steps)[0] * 1e3)
    movinet_ms = np.asarray(times.pop("MoViNet-A0-Stream"))
    rows = [{"figure": f"MoViNet-A0-Stream float32, {size}x{size}, 1 thread (random weights)",
             "ms_per_frame": float(np.median(movinet_ms)), "command": f"{COMMAND} --only stream"}]
    for name, ms in times.items():
        ms = np.asarray(ms)
        rows.append({"figure": f"sora_cls stream float32 ({name}), {size}x{size}, 1 thread",
                     "ms_per_frame": float(np.median(ms)), "movinet_ms_same_rounds": float(np.median(movinet_ms)),
                     "ratio_vs_movinet": float(np.median(ms / movinet_ms)), "rounds": rounds,
                     "command": f"{COMMAND} --only stream"})
    return rows
