"""`detect`: a detector run over a video file or a camera, frame by frame, with tracks.

The model is a run directory (Keras), a SavedModel (its `stream` signature) or a streaming
.tflite (LiteRT); each gives `step(frame)` on a BGR frame of any size -> boxes in that frame's
pixels and scores, carrying the state between frames. Tracks come from ByteTrack
(`sora_tf.detection.track`); results are written in the MOTChallenge format.
"""
import json
import os
import time

import cv2
import numpy as np

from sora_tf.atomic import atomic_write
from sora_tf.data.mot import write_mot
from sora_tf.data.video import VideoError
from sora_tf.detection import KerasStream, Tracker
from sora_tf.export.saved_model import newest
from sora_tf.export.stream import open_source
from sora_tf.export.tflite import read_labels


def _scale(frame, size):
    """RGB `frame` resized to `size` (h, w) as float32, and the factor from model pixels back."""
    h, w = frame.shape[:2]
    rgb = cv2.cvtColor(cv2.resize(frame, (size[1], size[0]), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
    return rgb, np.array([w / size[1], h / size[0]] * 2, np.float32)


class TFLiteDetector:
    def __init__(self, path, threads=None):
        from ai_edge_litert.interpreter import Interpreter

        _, self.spec = read_labels(path)
        if self.spec.get("kind") != "detect_stream":
            raise ValueError(f"{path}: a {self.spec.get('kind')} model, not a streaming detector")
        self.size = (self.spec["image_height"], self.spec["image_width"])
        self.runner = Interpreter(model_path=path, num_threads=threads).get_signature_runner()
        self.reset()

    def reset(self):
        self.state = {k: np.zeros(v, np.float32) for k, v in self.spec["states"].items()}

    def step_resized(self, rgb):
        """(boxes in the model's pixels, scores) of an RGB frame already at the model's size."""
        out = self.runner(frame=rgb[None].astype(np.float32), **self.state)
        self.state = {k: out[k] for k in self.state}
        return out["boxes"][0], out["scores"][0]

    def step(self, frame):
        rgb, back = _scale(frame, self.size)
        boxes, scores = self.step_resized(rgb)
        return boxes * back, scores


class SavedModelDetector:
    def __init__(self, path):
        import tensorflow as tf

        with open(os.path.join(path, "assets.extra", "sora_tf.json")) as f:
            self.spec = json.load(f)
        if "max_detections" not in self.spec:
            raise ValueError(f"{path}: not a detector's SavedModel")
        self._tf = tf
        self.signature = tf.saved_model.load(path).signatures["stream"]
        self.reset()

    def reset(self):
        self.state = {k: np.zeros(v, np.float32) for k, v in self.spec["states"].items()}

    def step(self, frame):
        rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        out = self.signature(frame=self._tf.constant(rgb[None]), **{k: self._tf.constant(v) for k, v in self.state.items()})
        self.state = {k: out[k].numpy() for k in self.state}
        return out["boxes"][0].numpy(), out["scores"][0].numpy()


class RunDetector:
    def __init__(self, path):
        from sora_tf.runs import load_run

        model, config, _, _ = load_run(path)
        if not hasattr(config, "max_detections"):
            raise ValueError(f"{path}: not a detection run")
        self.stream = KerasStream(model, config.size)

    def reset(self):
        self.stream.reset()

    def step(self, frame):
        rgb, back = _scale(frame, self.stream.size)
        boxes, scores = self.stream.step(rgb)
        return boxes * back, scores


def load_detector(path, threads=None):
    """A detector for a run directory, a SavedModel (or its model folder: newest version) or a
    streaming .tflite."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such model")
    if os.path.isfile(path):
        if not path.endswith(".tflite"):
            raise ValueError(f"{path}: expected a run directory, a SavedModel directory or a .tflite file")
        return TFLiteDetector(path, threads)
    if os.path.isfile(os.path.join(path, "run.json")):
        return RunDetector(path)
    if newest(path):
        return SavedModelDetector(newest(path))
    raise ValueError(f"{path}: neither a run directory (run.json), a SavedModel (saved_model.pb) "
                     "nor a model folder with integer versions")


def detect(model_path, source, *, out=None, mot=None, threads=None, max_frames=None, min_score=0.3):
    """Detect and track over `source`; returns {"frames", "detections", "tracks", "p50_ms",
    "p95_ms", "fps", "out", "mot"}. `out`: an annotated video (boxes with track ids); `mot`:
    MOTChallenge results of the tracks. Both are written atomically, whole once the source ends."""
    for name, value, least in (("--max-frames", max_frames, 1), ("--threads", threads, 1)):
        if value is not None and value < least:
            raise ValueError(f"{name} must be >= {least}, got {value}")
    if not 0 <= min_score <= 1:
        raise ValueError(f"--min-score must be in [0, 1], got {min_score}")
    if out and not out.lower().endswith((".mp4", ".avi")):
        raise ValueError(f"--out {out}: write the annotated video to a .mp4 or .avi file")
    detector = load_detector(model_path, threads)
    cap = open_source(source)
    fps = cap.get(cv2.CAP_PROP_FPS)
    fps = fps if np.isfinite(fps) and 0 < fps < 1000 else 25.0
    rows, latencies = [], []

    def run(video_path):
        tracker, writer = Tracker(fps), None
        try:
            while max_frames is None or len(latencies) < max_frames:
                ok, frame = cap.read()
                if not ok:
                    break
                t0 = time.perf_counter()
                boxes, scores = detector.step(frame)
                latencies.append((time.perf_counter() - t0) * 1e3)
                for box, score, track in zip(*tracker.update(boxes, scores)):
                    if score >= min_score:
                        rows.append((len(latencies), int(track), *map(float, box), float(score)))
                        _draw(frame, box, track)
                if video_path:
                    writer = writer or _writer(video_path, frame, fps)
                    writer.write(frame)
        finally:
            cap.release()
            if writer is not None:
                writer.release()
        if not latencies:
            raise VideoError(f"{source}: no decodable frames")
    start = time.perf_counter()
    if out:
        atomic_write(out, run)
    else:
        run(None)
    elapsed = time.perf_counter() - start
    if mot:
        atomic_write(mot, lambda tmp: write_mot(tmp, rows))
    return {"frames": len(latencies), "detections": len(rows), "tracks": len({r[1] for r in rows}),
            "p50_ms": float(np.percentile(latencies, 50)), "p95_ms": float(np.percentile(latencies, 95)),
            "fps": len(latencies) / elapsed, "out": out, "mot": mot}


def _draw(frame, box, track):
    x1, y1, x2, y2 = map(int, box)
    colour = tuple(int(c) for c in np.random.default_rng(int(track)).integers(64, 256, 3))
    cv2.rectangle(frame, (x1, y1), (x2, y2), colour, 2)
    cv2.putText(frame, str(int(track)), (x1, max(12, y1 - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1)


def _writer(path, frame, fps):
    h, w = frame.shape[:2]
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*("mp4v" if path.lower().endswith(".mp4") else "MJPG")),
                             fps, (w, h))
    if not writer.isOpened():
        raise OSError(f"{path}: OpenCV cannot write this video")
    return writer
