"""Video decoding and writing with OpenCV (its wheel bundles FFmpeg; tensorflow-io does not load with TF 2.21).

Container metadata is never trusted: real files claim 444 frames and decode 68, or report a
garbage count. Frame counts come from decoding (`grab`, which demuxes and decodes without the
colour conversion), and reads stop at the last wanted frame instead of decoding the whole file.
"""
import math
import os

os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # FFmpeg's own chatter; errors are ours to report
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from sora_tf.atomic import atomic_write  # noqa: E402


# One FFmpeg decoding thread per capture: the pipeline already decodes a clip per core, and
# FFmpeg's own threads on top of that oversubscribe the cores. Two clips at once over 150
# fight_surv files: 27.4 clips/s with FFmpeg's default threading, 37.1 with one thread each.
_CAPTURE_PARAMS = [cv2.CAP_PROP_N_THREADS, 1]


def open_capture(path):
    """An OpenCV capture of the video file `path` with one decoding thread."""
    return cv2.VideoCapture(path, cv2.CAP_ANY, _CAPTURE_PARAMS)


def single_threaded_opencv():
    """OpenCV's own thread pool off (process-wide), for callers that already decode a clip per
    core: its resize threads then only contend with them. 206 fight_surv clips through the
    tf.data reader, two runs each: 64 to 70 ms of CPU per clip with it, 67 to 82 without."""
    cv2.setNumThreads(1)


class VideoError(ValueError):
    """A file that cannot be used as a video. The message always starts with the path."""


def open_video(path):
    """A capture of the video file `path`, or a VideoError saying why it is not one."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise VideoError(f"{path}: no such file")
    if not os.path.isfile(path):
        raise VideoError(f"{path}: not a regular file")
    if os.path.getsize(path) == 0:
        raise VideoError(f"{path}: empty file")
    if not os.access(path, os.R_OK):
        raise VideoError(f"{path}: not readable (permissions)")
    cap = open_capture(path)
    if not cap.isOpened():
        cap.release()
        raise VideoError(f"{path}: not a video OpenCV/FFmpeg can open")
    return cap


def count_frames(path):
    """Decoded frame count of `path`. Raises VideoError for anything that yields no frame."""
    return probe(path)[0]


def probe(path):
    """(decoded frame count, frame rate) of `path`. The rate is the container's (0.0 when it is
    missing or absurd); only it, never the count, is taken from metadata."""
    cap = open_video(path)
    try:
        fps = cap.get(cv2.CAP_PROP_FPS)
        fps = float(fps) if np.isfinite(fps) and 0 < fps <= 1000 else 0.0
        n = 0
        while cap.grab():
            n += 1
    finally:
        cap.release()
    if n == 0:
        raise VideoError(f"{os.fspath(path)}: no decodable frames")
    return n, fps


def fit_frame(frame, size):
    """Any decoded frame (BGR, BGRA or grayscale, any size) to RGB uint8 of `size` = (H, W).

    Resized first, colour-converted after: the conversion then touches H x W pixels, not the
    source's. INTER_AREA averages when shrinking, so a 4K frame becomes a small one without
    aliasing and without a full-resolution float copy. A large shrink goes first by an integer
    factor (OpenCV's fast path for INTER_AREA) to within 2x of the target: 3x faster on a
    480x360 frame, within 0.4 grey levels of the one-step result.
    """
    h, w = size
    if frame.shape[:2] != (h, w):
        shrinking = frame.shape[0] > h or frame.shape[1] > w
        # the largest factor dividing both sides exactly, so that pixel areas stay aligned
        g, k = math.gcd(*frame.shape[:2]), min(frame.shape[0] // (2 * h), frame.shape[1] // (2 * w))
        k = max((d for d in range(1, k + 1) if g % d == 0), default=1)
        if k > 1:
            frame = cv2.resize(frame, (frame.shape[1] // k, frame.shape[0] // k), interpolation=cv2.INTER_AREA)
        frame = cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    if frame.ndim == 2:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
    if frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)


def read_frames(path, indices, size):
    """Frames at `indices` (non-decreasing, repeats allowed) as uint8 [len(indices), H, W, 3] RGB.

    Decodes sequentially and stops after the last wanted index. If the file ends early (it
    decoded fewer frames than it did when counted), the missing tail repeats the last frame read.
    """
    indices = np.asarray(indices, dtype=np.int64)
    if indices.size == 0:
        raise ValueError("read_frames needs at least one index")
    if np.any(np.diff(indices) < 0) or indices[0] < 0:
        raise ValueError(f"indices must be non-negative and non-decreasing, got {indices.tolist()}")
    out = np.empty((len(indices), size[0], size[1], 3), np.uint8)
    cap = open_video(path)
    filled = 0
    try:
        position = 0
        while filled < len(indices) and cap.grab():
            if indices[filled] == position:
                ok, frame = cap.retrieve()
                if not ok:
                    break
                frame = fit_frame(frame, size)
                while filled < len(indices) and indices[filled] == position:
                    out[filled] = frame
                    filled += 1
            position += 1
    finally:
        cap.release()
    if filled == 0:
        raise VideoError(f"{os.fspath(path)}: no decodable frames")
    out[filled:] = out[filled - 1]
    return out


VIDEO_CODECS = (("mp4v", ".mp4"), ("MJPG", ".avi"))


def _encode(path, frames, fps, fourcc):
    """Encode RGB uint8 frames [N, H, W, 3] with one codec; OSError where this build cannot."""
    h, w = frames.shape[1:3]
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    try:
        if not writer.isOpened():
            raise OSError(f"{path}: no {fourcc} encoder in this OpenCV build")
        for f in frames:
            writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    if not os.path.isfile(path) or os.path.getsize(path) == 0:
        raise OSError(f"{path}: the {fourcc} encoder wrote nothing")


def write_video(path, frames, fps, atomic=False):
    """Encode RGB uint8 frames to `path`: MPEG-4 part 2 in .mp4, else Motion-JPEG in .avi; with
    `atomic`, written beside it and renamed into place. Returns the path written (its extension
    may change to .avi): the pip OpenCV wheel has no H.264 encoder, but its FFmpeg always has
    mpeg4 and OpenCV has a built-in MJPEG writer."""
    stem = os.path.splitext(path)[0]
    for fourcc, ext in VIDEO_CODECS:
        out = stem + ext
        try:
            if atomic:
                atomic_write(out, lambda tmp: _encode(tmp, frames, fps, fourcc))
            else:
                _encode(out, frames, fps, fourcc)
            return out
        except OSError:
            if not atomic and os.path.exists(out):
                os.remove(out)
    raise RuntimeError(f"{path}: no working video encoder in this OpenCV build")


def write_clip_video(path, frames, fps=8, scale=2):
    """uint8 [N, H, W, 3] RGB frames, scaled up `scale` times, to a video file at `path`
    (atomically; its extension may change, see `write_video`)."""
    big = np.stack([cv2.resize(f, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST) for f in frames])
    return write_video(path, big, fps, atomic=True)
