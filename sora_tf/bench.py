"""`make bench`: measured figures, each with its baseline from the same run and the command
that produced it, written to BENCHMARKS.md (for people) and benchmarks.json (for scripts).

The machine is shared and noisy, so every figure is compared with a baseline measured in the
same process minutes apart, and the ratio is what to read. Nothing here is asserted by tests.
"""
import argparse
import json
import os
import platform
import resource
import sys
import time

import numpy as np

COMMAND = "python -m sora_tf.bench"


def _timeit(fn, repeat, warmup=2):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), float(np.percentile(times, 95))


def _peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_augment(repeat=10):
    """Clip augmentation per batch of 16 clips x 16 frames x 64x64: fused ops vs the Keras
    image-layer chain it replaced (baseline, rebuilt here with the same settings)."""
    import tensorflow as tf
    from keras import layers

    from sora_tf.data.augment import ClipAugment

    clips = tf.random.uniform((16, 16, 64, 64, 3), 0, 255)
    fused = ClipAugment(zoom=0.1, translate=0.05, rotation_deg=3, flip=False, brightness=0.15,
                        contrast=0.15, saturation=0.2, hue=0.0, noise_std=2.0, seed=0)
    geometry = [layers.RandomZoom((-0.1, 0.0), fill_mode="reflect", seed=0),
                layers.RandomTranslation(0.05, 0.05, fill_mode="reflect", seed=0),
                layers.RandomRotation(3 / 360, fill_mode="reflect", seed=0)]
    colour = layers.RandomColorJitter(value_range=(0, 255), brightness_factor=0.15,
                                      contrast_factor=0.15, saturation_factor=(0.4, 0.6), seed=0)
    noise = layers.GaussianNoise(2 / 255, seed=0)

    def chain(x):
        b, t, h, w, c = x.shape
        y = tf.reshape(tf.transpose(x, (0, 2, 3, 1, 4)), (b, h, w, t * c))
        for layer in geometry:
            y = layer(y, training=True)
        y = tf.transpose(tf.reshape(y, (b, h, w, t, c)), (0, 3, 1, 2, 4))
        y = tf.reshape(colour(tf.reshape(y, (b, t * h, w, c)), training=True), (b, t, h, w, c))
        return tf.clip_by_value(noise(y / 255, training=True) * 255, 0, 255)

    run_chain = tf.function(chain)
    run_fused = tf.function(lambda x: fused(x, training=True))
    base, _ = _timeit(lambda: run_chain(clips).numpy(), repeat)
    ours, _ = _timeit(lambda: run_fused(clips).numpy(), repeat)
    return [{"figure": "clip augmentation, 16x16x64x64x3 batch", "baseline": "Keras image-layer chain",
             "baseline_ms": base * 1e3, "ours_ms": ours * 1e3, "speedup": base / ours,
             "command": f"{COMMAND} --only augment"}]


def _naive(paths, clip_len, size):
    """(a) The seed's approach: Python + OpenCV, one clip at a time, the whole video read, then
    T frames picked and resized."""
    import cv2

    frames_read = 0
    for path in paths:
        cap = cv2.VideoCapture(path)
        frames = []
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(frame)
        cap.release()
        frames_read += len(frames)
        picked = np.linspace(0, len(frames) - 1, clip_len).round().astype(int)
        np.stack([cv2.resize(cv2.cvtColor(frames[i], cv2.COLOR_BGR2RGB), size[::-1],
                             interpolation=cv2.INTER_AREA) for i in picked])
    return frames_read


def _tf_data(paths, labels, counts, clip_len, size):
    """(b) The tf.data video path, as evaluation reads it; built once, iterated per pass (as
    Keras iterates it every epoch)."""
    from sora_tf.data.pipeline import make_dataset

    return make_dataset(paths, labels, counts, clip_len=clip_len, size=size, training=False, batch_size=16)


def _ceiling(paths, counts, clip_len, ffmpeg_threads=1):
    """(d) OpenCV decoding the frames (b) decodes (grab up to the last sampled one, retrieve the
    sampled ones), nothing else: no resize, no tf.data; a thread per core, each capture with
    `ffmpeg_threads` decoding threads (0: FFmpeg's default)."""
    from concurrent.futures import ThreadPoolExecutor

    import cv2

    def decode(item):
        path, count = item
        wanted = set(np.linspace(0, count - 1, clip_len).round().astype(int).tolist())
        cap = cv2.VideoCapture(path, cv2.CAP_ANY, [cv2.CAP_PROP_N_THREADS, ffmpeg_threads])
        for i in range(max(wanted) + 1):
            cap.grab()
            if i in wanted:
                cap.retrieve()
        cap.release()
        return max(wanted) + 1

    with ThreadPoolExecutor(os.cpu_count()) as pool:
        return sum(pool.map(decode, zip(paths, counts)))


def _prepared(root, clip_len, size):
    """(c) The prepared TFRecord path: JPEG frames decoded in-graph; built once like (b)."""
    from sora_tf.data.pipeline import dataset_for
    from sora_tf.data.sources import list_clips

    return dataset_for(list_clips(root), clip_len=clip_len, size=size, training=False, batch_size=16)


# (label, what it is): d opens captures as the pipeline does (one FFmpeg thread each), d0 with
# FFmpeg's default threading, so the ceiling is the faster of the two ways to decode.
INPUT_PATHS = (("a", "naive"), ("b", "tf.data"), ("c", "prepared"), ("d", "ceiling"),
               ("d0", "ceiling, FFmpeg's threading"))


def _input_worker(label, pick, clip_len, size, prepared_dir, conn):
    """One input path in its own process: a pass for every message received, the seconds sent back."""
    if label in ("b", "c"):
        ds = (_tf_data(pick.paths, pick.labels, pick.counts, clip_len, size) if label == "b"
              else _prepared(prepared_dir, clip_len, size))

        def run():
            for _ in ds:
                pass
    elif label == "a":
        def run():
            _naive(pick.paths, clip_len, size)
    else:
        def run():
            _ceiling(pick.paths, pick.counts, clip_len, ffmpeg_threads=1 if label == "d" else 0)

    run()  # warm: files in the page cache, graphs traced, for every path alike
    conn.send("ready")
    while conn.recv():
        t0 = time.perf_counter()
        run()
        conn.send(time.perf_counter() - t0)
    conn.send(_peak_rss_mb())


def bench_input(data, n=280, clip_len=16, size=(64, 64), rounds=3):
    """Input pipeline throughput on the same files: (a) naive loop, (b) tf.data, (c) prepared
    TFRecords (written first, untimed), (d) decode ceiling; ratios b/a, c/a, b/d, c/d.

    Each path runs in its own process (its own peak memory), warm, and the timed passes go in
    `rounds` rounds of a, b, c, d, d0, so that a slow spell on this shared machine falls on
    every path alike. Each path's figure is its fastest pass.
    """
    import multiprocessing
    import tempfile

    from sora_tf.data.prepared import prepare
    from sora_tf.data.sources import list_clips

    ctx = multiprocessing.get_context("spawn")
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        listing = list_clips(data)  # probed once here; each worker gets the picked clips
        step = max(1, len(listing.paths) // n)
        pick = listing.subset(list(range(0, len(listing.paths), step))[:n])
        prepared_dir = prepare(pick, os.path.join(tmp, "prepared"), size=max(size))
        workers = {}
        for label, _ in INPUT_PATHS:
            conn, child = ctx.Pipe()
            proc = ctx.Process(target=_input_worker, args=(label, pick, clip_len, size, prepared_dir, child))
            proc.start()
            conn.recv()  # warm; one worker at a time, so the warm passes do not overlap the timed ones
            workers[label] = (proc, conn)
        seconds = {label: [] for label in workers}
        for _ in range(rounds):
            for label, (_, conn) in workers.items():
                conn.send(True)
                seconds[label].append(conn.recv())
        for (label, kind), (proc, conn) in zip(INPUT_PATHS, workers.values()):
            conn.send(False)
            best = min(seconds[label])
            # frames decoded: (b) and (d) grab up to the last sampled frame, (a) reads every
            # frame, (c) decodes only the sampled JPEGs
            frames = (clip_len * len(pick.paths) if label == "c" else
                      sum(pick.counts) if label == "a" else
                      sum(int(np.linspace(0, c - 1, clip_len).round()[-1]) + 1 for c in pick.counts))
            rows[label] = {"path": kind, "clips": len(pick.paths), "passes": rounds, "seconds": best,
                           "clips_per_s": len(pick.paths) / best, "frames_decoded_per_s": frames / best,
                           "peak_rss_mb": conn.recv(),
                           "command": f"{COMMAND} --only input --data {data} --clips {n}"}
            proc.join()
    for x in "bc":
        rows[x][f"{x}/a"] = rows[x]["clips_per_s"] / rows["a"]["clips_per_s"]
        rows[x][f"{x}/d"] = rows[x]["clips_per_s"] / rows["d"]["clips_per_s"]
    return [{"label": k, **v} for k, v in rows.items()]


def _long_worker(kind, path, clip_len, queue):
    from sora_tf.data.video import count_frames, read_frames

    t0 = time.perf_counter()
    if kind == "naive":
        _naive([path], clip_len, (64, 64))
    else:
        read_frames(path, np.linspace(0, count_frames(path) - 1, clip_len).round().astype(int), (64, 64))
    queue.put({"seconds": time.perf_counter() - t0, "peak_rss_mb": _peak_rss_mb()})


def bench_long_video(path, clip_len=16):
    """One 16-frame clip from a long video: the naive loop (every frame kept in memory) against
    `read_frames` (streams, keeps only the wanted frames at model size), each in its own process."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    rows = []
    for kind in ("naive", "read_frames"):
        queue = ctx.Queue()
        proc = ctx.Process(target=_long_worker, args=(kind, path, clip_len, queue))
        proc.start()
        rows.append({"reader": kind, "video": os.path.basename(path), **queue.get(),
                     "command": f"{COMMAND} --only long --long-video {path}"})
        proc.join()
    return rows


def bench_train_step(data, steps=20):
    """sora_cls default training step, clips/s: real input (tf.data, decoding) vs one cached
    in-memory batch repeated. Their ratio says whether training is input-bound."""
    import tensorflow as tf

    from sora_tf.data.pipeline import make_dataset, supervised
    from sora_tf.data.sources import list_clips
    from sora_tf.models import sora_cls
    from sora_tf.train.run import compile_trainer, trainer_for

    listing = list_clips(data)
    config = sora_cls.Config(num_classes=len(listing.classes))

    def videos(cache):
        return supervised(make_dataset(
            listing.paths, listing.labels, listing.counts, clip_len=config.num_frames,
            size=(config.image_size,) * 2, training=True, batch_size=config.batch_size,
            stride_range=config.stride_range, cache=cache)).repeat()

    ds, in_memory = videos(False), videos(True)
    trainer = trainer_for(sora_cls.build(config), config)
    compile_trainer(trainer, config, steps)
    cached = tf.data.Dataset.from_tensors(next(iter(ds))).repeat()
    epoch = len(listing.paths) // config.batch_size
    rows = []
    for name, source, warm in (("tf.data decoding video files every step", ds, 3),
                               ("tf.data, decoded videos kept in memory (epochs after the first)",
                                in_memory, epoch),
                               ("one cached batch (no input cost)", cached, 3)):
        trainer.fit(source, steps_per_epoch=warm, epochs=1, verbose=0)
        t0 = time.perf_counter()
        trainer.fit(source, steps_per_epoch=steps, epochs=1, verbose=0)
        seconds = time.perf_counter() - t0
        rows.append({"input": name, "clips_per_s": steps * config.batch_size / seconds,
                     "ms_per_step": seconds / steps * 1e3, "command": f"{COMMAND} --only train --data {data}"})
    for row in rows[:2]:
        row["vs_no_input_cost"] = row["clips_per_s"] / rows[2]["clips_per_s"]
    return rows


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
                row[f"ms_per_frame_{threads}t"] = _timeit(lambda: model.step(frame), repeat * 10)[0] * 1e3
            else:
                model = TFLiteClip(path, threads)
                clip = np.random.default_rng(0).uniform(0, 255, (model.num_frames, model.image_size,
                                                                 model.image_size, 3))
                row[f"ms_per_clip_{threads}t"] = _timeit(lambda: model.predict(clip), repeat)[0] * 1e3
        row["command"] = f"{COMMAND} --only tflite --export {export_dir}"
        rows.append(row)
    return rows


def bench_stream_sizes(config, sizes=(172,), repeat=200):
    """Streaming per-frame latency of sora_cls (random weights) at other input sizes, float32,
    1 thread, for comparison with MoViNet-A0-Stream (2.0 ms/frame at 172x172, measured on this
    machine with 1 thread and random weights)."""
    import dataclasses
    import tempfile

    from sora_tf.export import tflite
    from sora_tf.export.runtime import TFLiteStream
    from sora_tf.models import sora_cls

    rows = []
    for size in sizes:
        cfg = dataclasses.replace(config, image_size=size)
        model = sora_cls.build(cfg)
        with tempfile.TemporaryDirectory() as tmp:
            clips = np.random.default_rng(0).uniform(0, 255, (2, cfg.num_frames, size, size, 3))
            paths = tflite.export_tflite(model, [str(i) for i in range(cfg.num_classes)], tmp, clips,
                                         variants=(), stream_variants=("float32",))
            runner = TFLiteStream(paths["stream_float32"], 1)
            frame = clips[0, 0]
            ms = _timeit(lambda: runner.step(frame), repeat)[0] * 1e3
        rows.append({"figure": f"streaming sora_cls float32, {size}x{size}, 1 thread", "ms_per_frame": ms,
                     "movinet_a0_stream_ms": 2.0, "ratio_vs_movinet": ms / 2.0,
                     "command": f"{COMMAND} --only stream"})
    return rows


def write_reports(results, out_md="BENCHMARKS.md", out_json="benchmarks.json"):
    """Write both reports; sections not run this time are kept from the previous benchmarks.json
    (each keeps its own `when`), so `--only` refreshes part of the file."""
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    previous = {}
    if os.path.isfile(out_json):
        with open(out_json) as f:
            previous = {k: v for k, v in json.load(f).items() if k != "meta"}
    for rows in results.values():
        for row in rows:
            row.setdefault("when", when)
    results = {**previous, **results}
    meta = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
            "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    with open(out_json + ".tmp", "w") as f:
        json.dump({"meta": meta, **results}, f, indent=2)
    os.replace(out_json + ".tmp", out_json)
    lines = ["# Benchmarks", "", f"Written by `make bench` ({COMMAND}) on {meta['machine']}, {meta['when']}.",
             "Each figure is measured against a baseline in the same run; read the ratios, the machine is shared.", ""]
    for section, rows in results.items():
        if not rows:
            continue
        lines += [f"## {section}", ""]
        keys = [k for k in dict.fromkeys(k for r in rows for k in r) if k != "command"]
        lines.append("| " + " | ".join(keys) + " |")
        lines.append("|" + "---|" * len(keys))
        for r in rows:
            lines.append("| " + " | ".join(_fmt(r.get(k)) for k in keys) + " |")
        lines += ["", "Commands: " + ", ".join(sorted({f"`{r['command']}`" for r in rows})), ""]
    with open(out_md + ".tmp", "w") as f:
        f.write("\n".join(lines))
    os.replace(out_md + ".tmp", out_md)


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
    return "" if v is None else str(v)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="sora_tf.bench", description=__doc__)
    ap.add_argument("--only", choices=("input", "long", "train", "augment", "tflite", "stream"), action="append")
    ap.add_argument("--long-video", default=os.path.join("..", "shared", "data", "pets09_s2l1", "vtest.avi"),
                    help="a long video for the memory figure (skipped when absent)")
    ap.add_argument("--data", help="video data for the input and training figures (default: generated)")
    ap.add_argument("--clips", type=int, default=280, help="clips read by each input path")
    ap.add_argument("--export", help="a tflite/<version> folder (default: the newest export of the newest run)")
    args = ap.parse_args(argv)
    only = set(args.only or ("input", "long", "train", "augment", "tflite", "stream"))
    results = {}
    if "long" in only and os.path.isfile(args.long_video):
        results["Long video, one clip (memory)"] = bench_long_video(args.long_video)
    if only & {"input", "train"}:
        from sora_tf.data import synthetic
        data = args.data or synthetic.ensure("default")
        if "input" in only:
            results["Input pipeline (eval clips, 16 frames at 64x64)"] = bench_input(data, args.clips)
        if "train" in only:
            results["Training step (sora_cls default)"] = bench_train_step(data)
    if "augment" in only:
        results["Augmentation"] = bench_augment()
    if "tflite" in only or "stream" in only:
        from sora_tf.models import sora_cls
        export_dir = args.export
        if export_dir is None:
            base = os.path.join("export", "sora_cls", "tflite")
            versions = sorted((int(v) for v in os.listdir(base) if v.isdigit()), reverse=True) \
                if os.path.isdir(base) else []
            export_dir = os.path.join(base, str(versions[0])) if versions else None
        if "tflite" in only:
            if export_dir is None:
                print("no export/sora_cls/tflite/<version>: run `make train` and `make export` first", file=sys.stderr)
                return 2
            results["TFLite (LiteRT, XNNPACK)"] = bench_tflite(export_dir)
        if "stream" in only:
            results["Streaming vs MoViNet-A0-Stream"] = bench_stream_sizes(sora_cls.Config())
    results["Peak memory"] = [{"process": "bench", "peak_rss_mb": _peak_rss_mb(), "command": COMMAND}]
    write_reports(results)
    print(open("BENCHMARKS.md").read())
    return 0


if __name__ == "__main__":
    sys.exit(main())
