"""Evaluation of a detection run: COCO AP of the stream over the validation and test frames,
precision and recall at the best-F1 threshold, the single-frame twin and OpenCV's HOG people
detector on the same test frames with the same evaluator, and tracking (MOTA, IDF1) on the test
frames (sora_tf/detection.py). Boxes are compared in the source's pixels.
"""
import os
import time

import cv2
import keras
import numpy as np

from sora_tf.atomic import save_json
from sora_tf.data.mot import frame_indices, load_sequence, native_frames
from sora_tf.detection import (HOG_SETTINGS, KerasStream, ap_metrics, hog_people, model_detections, native_gt, track,
                               tracking_metrics)
from sora_tf.progress import bar
from sora_tf.runs import load_checkpoint, load_json, load_run


def hog_detections(sequence, indices, upscale=2.0):
    """OpenCV's HOG people detector at its usual best settings (winStride 8, padding 8, scale 1.05)
    on frames upscaled `upscale` times (it misses people under 128 px), its boxes shrunk by the
    window's margin as OpenCV's peopledetect sample does (15% of the width a side, 5% of the
    height). Returns (detections in source pixels, seconds per frame)."""
    hog = hog_people()
    found, seconds = [], 0.0
    for _, image in bar(native_frames(sequence.source, indices), "HOG baseline", total=len(indices), unit="frame"):
        big = cv2.resize(image, None, fx=upscale, fy=upscale, interpolation=cv2.INTER_LINEAR)
        start = time.perf_counter()
        rects, weights = hog.detectMultiScale(big, **HOG_SETTINGS)
        seconds += time.perf_counter() - start
        rects = np.asarray(rects, np.float32).reshape(-1, 4) / upscale
        x, y, w, h = rects.T
        boxes = np.stack([x + 0.15 * w, y + 0.05 * h, x + 0.85 * w, y + 0.95 * h], 1)
        found.append((boxes, np.asarray(weights, np.float32).reshape(-1)))
    return found, seconds / max(len(indices), 1)


class ValidationAP(keras.callbacks.Callback):
    """Adds `val_ap50` and `val_ap` to each epoch's logs: the stream over the validation frames."""

    def __init__(self, core, frame_set):
        super().__init__()
        self.frames = frame_set
        self.stream = KerasStream(core, frame_set.sequence.frames.shape[1:3])  # shares core's weights

    def on_epoch_end(self, epoch, logs=None):
        sequence, indices = self.frames.sequence, self.frames.indices
        found = ap_metrics(native_gt(sequence, indices), model_detections(self.stream, sequence, indices))
        if logs is not None:
            logs["val_ap50"], logs["val_ap"] = found["ap50"], found["ap"]


def measure(model, sequence, indices, tracking=False):
    stream = KerasStream(model, sequence.frames.shape[1:3])
    found = ap_metrics(native_gt(sequence, indices), dets := model_detections(stream, sequence, indices))
    if tracking:
        found["tracking"] = tracking_metrics(sequence, indices, track(dets, sequence.fps))
    return found


def evaluate(run_dir, data=None, strict=False):
    """Write metrics.json: validation and (held-out) test AP of the run, and beside the test
    figures the single-frame twin's and HOG's on the same frames; with `data`, all its frames."""
    model, config, _, info = load_run(run_dir)
    sequence = load_sequence(data or info["data"], config.size)
    if data is not None:
        metrics = {**measure(model, sequence, list(range(len(sequence.frames))), tracking=True),
                   "split": os.path.abspath(data)}
    else:
        split = load_json(os.path.join(run_dir, "split.json"), needs=("val", "test"))
        metrics = {**measure(model, sequence, frame_indices(split["val"])), "split": "validation",
                   "frame_ranges": {k: split[k] for k in ("train", "val", "test")}}
        if split["test"]:
            test = frame_indices(split["test"])
            metrics["test"] = measure(model, sequence, test, tracking=True)
            twin = os.path.join(run_dir, "single_frame", "best.keras")
            if os.path.isfile(twin):
                metrics["test"]["single_frame"] = measure(load_checkpoint(twin), sequence, test)
            if config.hog_baseline:
                hog, seconds = hog_detections(sequence, test, config.hog_upscale)
                metrics["test"]["hog"] = {**ap_metrics(native_gt(sequence, test), hog), "upscale": config.hog_upscale,
                                          "seconds_per_frame": seconds}
    save_json(os.path.join(run_dir, "metrics.json"), metrics)
    return metrics


def describe(metrics):
    """The lines `train` and `evaluate` print."""
    def line(name, m):
        return (f"{name} AP50 {m['ap50']:.4f}  AP {m['ap']:.4f}  precision {m['precision']:.3f} recall "
                f"{m['recall']:.3f} at score {m['score_threshold']:.2f}  ({m['frames']} frames, {m['boxes']} boxes)")
    def tracks(name, m):
        return f"{name} tracking (ByteTrack): MOTA {m['mota']:.4f}  IDF1 {m['idf1']:.4f}  ID switches {m['id_switches']}"
    lines = [line(metrics["split"], metrics)]
    if "tracking" in metrics:  # evaluate --data: every frame of that data
        lines.append(tracks(metrics["split"], metrics["tracking"]))
    test = metrics.get("test")
    if test:
        lines.append(line("test", test))
        for key, name in (("single_frame", "  single-frame twin"), ("hog", "  OpenCV HOG")):
            if key in test:
                lines.append(line(name, test[key]))
        lines.append(tracks("test", test["tracking"]))
    return "\n".join(lines)
