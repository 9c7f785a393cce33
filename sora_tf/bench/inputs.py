"""Input pipeline throughput (naive loop, tf.data, prepared TFRecords, decode ceiling) and the
memory of reading one clip from a long video."""
import os
import time

import numpy as np

from sora_tf.bench.report import COMMAND, peak_rss_mb


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
    conn.send(peak_rss_mb())


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
    queue.put({"seconds": time.perf_counter() - t0, "peak_rss_mb": peak_rss_mb()})


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
