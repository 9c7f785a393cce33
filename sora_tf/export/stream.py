"""Real-time classification with the streaming .tflite: frames from a video file or a camera.

The model was trained on clips of T frames, so by default the state restarts every T frames
fed (`window`); `every` feeds one frame in N, to match the training clips' frame spacing: by
default the source's frame rate over the run's `fps`, as evaluation sampled (1 where either is
unknown, or the run spread its clips over whole videos).
"""
import time

import cv2
import numpy as np

from sora_tf.data.video import VideoError, fit_frame
from sora_tf.export.runtime import TFLiteStream


def open_source(source):
    """An OpenCV capture of a video file or a camera index ("0"), or a VideoError."""
    cap = cv2.VideoCapture(int(source) if str(source).isdigit() else source)
    if not cap.isOpened():
        cap.release()
        raise VideoError(f"{source}: cannot open (not a video, or no such camera)")
    return cap


def stream(model_path, source, *, every=None, window=None, out=None, threads=None, max_frames=None,
           report=print):
    """Run the streaming model over `source`; calls `report` with a line per frame fed and
    returns {"frames", "every", "median_ms", "p95_ms", "fps", "out"}."""
    for name, value, least in (("--every", every, 1), ("--window", window, 0), ("--max-frames", max_frames, 1),
                               ("--threads", threads, 1)):
        if value is not None and value < least:
            raise ValueError(f"{name} must be >= {least}, got {value}")
    model = TFLiteStream(model_path, threads)
    window = model.num_frames if window is None else window
    cap = open_source(source)
    if every is None:
        rate = cap.get(cv2.CAP_PROP_FPS)
        every = max(1, round(rate / model.fps)) if model.fps > 0 and np.isfinite(rate) and rate > 0 else 1
    writer, latencies, fed, position = None, [], 0, 0
    start = time.perf_counter()
    try:
        while max_frames is None or position < max_frames:
            ok, frame = cap.read()
            if not ok:
                break
            position += 1
            if (position - 1) % every:
                continue
            if window and fed % window == 0:
                model.reset()
            rgb = fit_frame(frame, (model.image_size,) * 2)
            t0 = time.perf_counter()
            probs, _ = model.step(rgb)
            latencies.append((time.perf_counter() - t0) * 1e3)
            fed += 1
            top = int(np.argmax(probs))
            report(f"frame {position - 1}: {model.classes[top]} {probs[top]:.3f}  {latencies[-1]:.2f} ms  "
                   f"(median {np.median(latencies):.2f}, p95 {np.percentile(latencies, 95):.2f}, "
                   f"{fed / (time.perf_counter() - start):.1f} fps)")
            if out:
                if writer is None:
                    h, w = frame.shape[:2]
                    writer = cv2.VideoWriter(out, cv2.VideoWriter_fourcc(*"mp4v"),
                                             cap.get(cv2.CAP_PROP_FPS) or 25.0, (w, h))
                cv2.putText(frame, f"{model.classes[top]} {probs[top]:.2f}", (8, 24),
                            cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 255, 0), 2)
                writer.write(frame)
    finally:
        cap.release()
        if writer is not None:
            writer.release()
    if not fed:
        raise VideoError(f"{source}: no decodable frames")
    elapsed = time.perf_counter() - start
    return {"frames": fed, "every": every, "median_ms": float(np.median(latencies)),
            "p95_ms": float(np.percentile(latencies, 95)), "fps": fed / elapsed, "out": out}
