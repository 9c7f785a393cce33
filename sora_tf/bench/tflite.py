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


def bench_stream_sizes(config, sizes=(172,), repeat=200):
    """Streaming per-frame latency of sora_cls (random weights) at other input sizes, float32,
    1 thread, for comparison with MoViNet-A0-Stream (2.0 ms/frame at 172x172, measured on this
    machine with 1 thread and random weights)."""
    import dataclasses
    import tempfile

    from sora_tf.export.classify import export_tflite
    from sora_tf.export.runtime import TFLiteStream
    from sora_tf.models import sora_cls

    rows = []
    for size in sizes:
        cfg = dataclasses.replace(config, image_size=size)
        model = sora_cls.build(cfg)
        with tempfile.TemporaryDirectory() as tmp:
            clips = np.random.default_rng(0).uniform(0, 255, (2, cfg.num_frames, size, size, 3))
            paths = export_tflite(model, [str(i) for i in range(cfg.num_classes)], tmp, clips,
                                         variants=(), stream_variants=("float32",))
            runner = TFLiteStream(paths["stream_float32"], 1)
            frame = clips[0, 0]
            ms = timeit(lambda: runner.step(frame), repeat)[0] * 1e3
        rows.append({"figure": f"streaming sora_cls float32, {size}x{size}, 1 thread", "ms_per_frame": ms,
                     "movinet_a0_stream_ms": 2.0, "ratio_vs_movinet": ms / 2.0,
                     "command": f"{COMMAND} --only stream"})
    return rows
