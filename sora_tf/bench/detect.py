"""Detection latency per frame: the streaming TFLite files (float32, int8; 1 and 2 threads) beside
OpenCV's HOG people detector (the baseline sora_det is measured against) in the same run."""
import json
import os

import cv2

from sora_tf.bench.report import COMMAND, timeit
from sora_tf.detection import HOG_SETTINGS, hog_people


def _frames(video, count=8):
    """BGR frames of `video`, or generated walkers frames when it is absent."""
    if video and os.path.isfile(video):
        cap = cv2.VideoCapture(video)
        frames = [cap.read()[1] for _ in range(count)]
        cap.release()
        return [f for f in frames if f is not None]
    from sora_tf.data import synthetic_det
    rgb, _ = synthetic_det.render(synthetic_det.VARIANTS["default"])
    return [cv2.cvtColor(f, cv2.COLOR_RGB2BGR) for f in rgb[:count]]


def bench_detect(export_dir, video=None, repeat=30):
    """ms per frame of each streaming .tflite (resizing included, as `detect` runs it) and of HOG
    (winStride 8, padding 8, scale 1.05, on the frame upscaled 2x, as evaluation runs it)."""
    from sora_tf.export.detector import TFLiteDetector

    frames = _frames(video)
    hog = hog_people()
    big = [cv2.resize(f, None, fx=2.0, fy=2.0, interpolation=cv2.INTER_LINEAR) for f in frames]
    k = iter(range(10 ** 9))
    hog_ms = timeit(lambda: hog.detectMultiScale(big[next(k) % len(big)], **HOG_SETTINGS), 3, warmup=1)[0] * 1e3
    parity = {p["artifact"]: p for p in json.load(open(os.path.join(export_dir, "parity.json")))}
    source = f"{frames[0].shape[1]}x{frames[0].shape[0]} frames"
    rows = [{"model": "OpenCV HOG (2x upscale)", "threads": cv2.getNumThreads(), "ms_per_frame": hog_ms,
             "ratio_vs_hog": 1.0, "test_ap50": None, "frames": source, "command": f"{COMMAND} --only detect"}]
    for name in sorted(n for n in os.listdir(export_dir) if n.endswith(".tflite")):
        for threads in (1, 2):
            detector = TFLiteDetector(os.path.join(export_dir, name), threads)
            i = iter(range(10 ** 9))
            ms = timeit(lambda: detector.step(frames[next(i) % len(frames)]), repeat)[0] * 1e3
            rows.append({"model": name, "threads": threads, "ms_per_frame": ms, "ratio_vs_hog": ms / hog_ms,
                         "test_ap50": parity.get(f"tflite_{name[:-7]}", {}).get("ap50"), "frames": source,
                         "command": f"{COMMAND} --only detect --detect-export {export_dir}"})
    return rows
