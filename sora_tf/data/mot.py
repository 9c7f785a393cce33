"""Detection data in the MOTChallenge formats: a video file with a `gt.txt` beside it, or the MOT
folder layout (`img1/000001.jpg ...`, `gt/gt.txt`, optional `seqinfo.ini`).

`gt.txt` rows are `frame,id,x,y,w,h[,conf,...]`: frames from 1, pixel boxes from the top-left
corner. A row with `conf` 0 is an ignored region, as MOT defines it: detections there count
neither way. Frames are decoded once, resized to the model's input, and kept in memory.
"""
import configparser
import dataclasses
import logging
import math
import os

import cv2
import numpy as np

from sora_tf.data.sources import VIDEO_EXTENSIONS
from sora_tf.data.video import VideoError, open_capture, open_video, write_video

log = logging.getLogger("sora_tf.data")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")


@dataclasses.dataclass
class Sequence:
    """A decoded, annotated sequence. `boxes[i]` / `ignore[i]`: float32 [n, 4] x1, y1, x2, y2 of
    frame i (0-based) in the pixels of `frames` (the model's input size); `ids[i]` the track ids."""

    frames: np.ndarray  # uint8 [N, H, W, 3] RGB at the model's input size
    boxes: list
    ids: list
    ignore: list
    native_size: tuple  # (width, height) of the source
    fps: float
    source: str  # the video file or image folder
    gt_path: str
    clipped: int = 0  # boxes that reached past the frame, clipped to it

    @property
    def box_scale(self):
        """[sx, sy, sx, sy]: model pixels per source pixel, for x1, y1, x2, y2 boxes."""
        sx, sy = self.frames.shape[2] / self.native_size[0], self.frames.shape[1] / self.native_size[1]
        return np.array([sx, sy, sx, sy], np.float32)


class FrameSet:
    """Frames `indices` (0-based) of an annotated `Sequence`: what detection validates, tests,
    calibrates and checks parity on."""

    def __init__(self, sequence, indices):
        self.sequence, self.indices = sequence, list(indices)

    @property
    def frames(self):
        return self.sequence.frames[self.indices]


def find_sequence(data):
    """(frames source, gt.txt path, fps or None) of `data`: a MOT folder (img1/ + gt/gt.txt), a folder
    with one video and gt.txt, or a video file with gt.txt beside it."""
    if not os.path.exists(data):
        raise FileNotFoundError(f"{data}: no such file or folder")
    if os.path.isfile(data):
        gt = os.path.join(os.path.dirname(os.path.abspath(data)), "gt.txt")
        if not os.path.isfile(gt):
            raise ValueError(f"{data}: no gt.txt beside the video (MOTChallenge ground truth)")
        return data, gt, None
    if os.path.isdir(os.path.join(data, "img1")):
        gt = os.path.join(data, "gt", "gt.txt")
        if not os.path.isfile(gt):
            raise ValueError(f"{data}: a MOT folder with img1/ but no gt/gt.txt")
        return os.path.join(data, "img1"), gt, _seqinfo_fps(os.path.join(data, "seqinfo.ini"))
    gt = os.path.join(data, "gt.txt")
    videos = sorted(f for f in os.listdir(data) if os.path.splitext(f)[1].lower() in VIDEO_EXTENSIONS)
    if not os.path.isfile(gt) or len(videos) != 1:
        raise ValueError(f"{data}: detection data is a folder with one video file and its gt.txt, or a "
                         f"MOTChallenge folder (img1/, gt/gt.txt); found {len(videos)} video(s)"
                         f"{'' if os.path.isfile(gt) else ' and no gt.txt'}")
    return os.path.join(data, videos[0]), gt, None


def _seqinfo_fps(path):
    if not os.path.isfile(path):
        return None
    parser = configparser.ConfigParser()
    parser.read(path)
    try:
        return float(parser["Sequence"]["frameRate"])
    except (KeyError, ValueError):
        return None


def _images(folder):
    return sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS))


def read_frames(source, size):
    """(uint8 RGB frames [N, H, W, 3] resized to `size` (height, width), (width, height) of the
    source, its fps or None) of a video file or an image folder."""
    height, width = size
    frames, native, fps = [], None, None
    if os.path.isdir(source):
        files = _images(source)
        if not files:
            raise ValueError(f"{source}: no images")
        for name in files:
            image = cv2.imread(os.path.join(source, name), cv2.IMREAD_COLOR)
            if image is None:
                raise ValueError(f"{os.path.join(source, name)}: not an image OpenCV can read")
            native = native or (image.shape[1], image.shape[0])
            if (image.shape[1], image.shape[0]) != native:
                raise ValueError(f"{os.path.join(source, name)}: {image.shape[1]}x{image.shape[0]}, "
                                 f"the other frames are {native[0]}x{native[1]}")
            frames.append(cv2.cvtColor(cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA),
                                       cv2.COLOR_BGR2RGB))
    else:
        cap = open_video(source)
        try:
            fps = cap.get(cv2.CAP_PROP_FPS) or None
            while True:
                ok, image = cap.read()
                if not ok:
                    break
                native = native or (image.shape[1], image.shape[0])
                frames.append(cv2.cvtColor(cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA),
                                           cv2.COLOR_BGR2RGB))
        finally:
            cap.release()
        if not frames:
            raise VideoError(f"{source}: no frame could be decoded")
    fps = fps if fps and math.isfinite(fps) and 0 < fps < 1000 else None
    return np.stack(frames), native, fps


def native_frames(source, indices):
    """Yield (index, BGR frame at the source's own size) for the wanted 0-based `indices`, decoding
    no further than the last of them."""
    wanted = set(indices)
    if os.path.isdir(source):
        files = _images(source)
        for i in sorted(wanted):
            yield i, cv2.imread(os.path.join(source, files[i]), cv2.IMREAD_COLOR)
        return
    cap = open_capture(source)
    try:
        for i in range(max(wanted) + 1):
            ok, image = cap.read()
            if not ok:
                raise VideoError(f"{source}: ended at frame {i + 1}, before frame {max(wanted) + 1}")
            if i in wanted:
                yield i, image
    finally:
        cap.release()


def read_gt(path, num_frames, native_size):
    """{0-based frame: [(id, x1, y1, x2, y2, ignored)]} from a MOTChallenge gt.txt, and how many
    boxes were clipped to the frame. A malformed row, a box with no area or wholly outside the
    frame, or a frame past the end of the video is an error naming the file and line."""
    width, height = native_size
    rows, clipped = {}, 0
    with open(path, encoding="utf-8-sig") as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            where = f"{path}:{number}"
            fields = line.replace(" ", "").split(",")
            try:
                values = [float(v) for v in fields[:7]]
            except ValueError:
                raise ValueError(f"{where}: not numbers: {line[:80]!r} (expected frame,id,x,y,w,h[,conf,...])") from None
            if len(values) < 6 or not all(map(math.isfinite, values)):
                raise ValueError(f"{where}: expected frame,id,x,y,w,h[,conf,...], got {line[:80]!r}")
            frame, track, x, y, w, h = values[:6]
            if frame != int(frame) or frame < 1:
                raise ValueError(f"{where}: frame {fields[0]} is not a frame number (they start at 1)")
            if frame > num_frames:
                raise ValueError(f"{where}: frame {int(frame)} is past the end of the video ({num_frames} frames)")
            if w <= 0 or h <= 0:
                raise ValueError(f"{where}: box {w:g}x{h:g} has no area")
            x1, y1, x2, y2 = max(x, 0.0), max(y, 0.0), min(x + w, width), min(y + h, height)
            if x2 <= x1 or y2 <= y1:
                raise ValueError(f"{where}: box ({x:g}, {y:g}, {w:g}, {h:g}) lies outside the "
                                 f"{width}x{height} frame")
            clipped += (x1, y1, x2, y2) != (x, y, x + w, y + h)
            ignored = len(values) >= 7 and values[6] == 0
            rows.setdefault(int(frame) - 1, []).append((int(track), x1, y1, x2, y2, ignored))
    if not rows:
        raise ValueError(f"{path}: no boxes")
    return rows, clipped


def load_sequence(data, size):
    """The `Sequence` of `data` (see `find_sequence`), frames resized to `size` (height, width)."""
    source, gt_path, fps = find_sequence(data)
    frames, native, video_fps = read_frames(source, size)
    rows, clipped = read_gt(gt_path, len(frames), native)
    sx, sy = size[1] / native[0], size[0] / native[1]
    boxes, ids, ignore = [], [], []
    for i in range(len(frames)):
        found = rows.get(i, [])
        people = [r for r in found if not r[5]]
        boxes.append(np.array([[r[1] * sx, r[2] * sy, r[3] * sx, r[4] * sy] for r in people], np.float32).reshape(-1, 4))
        ids.append(np.array([r[0] for r in people], np.int64))
        ignore.append(np.array([[r[1] * sx, r[2] * sy, r[3] * sx, r[4] * sy] for r in found if r[5]],
                               np.float32).reshape(-1, 4))
    if clipped:
        log.info("%s: %d box(es) reached past the frame and were clipped to it", gt_path, clipped)
    return Sequence(frames, boxes, ids, ignore, native, fps or video_fps or 25.0, source, gt_path, clipped)


def temporal_split(num_frames, fps, val_fraction, test_fraction, gap_seconds):
    """{"train", "val", "test": [first, last] 1-based frame ranges, "gap_frames"}: train on the
    first part, validate on the middle, test on the last, `gap_seconds` apart (at least one
    second and one frame), since neighbouring frames are near-duplicates."""
    gap = max(1, math.ceil(max(gap_seconds, 1.0) * fps))
    n_test, n_val = round(test_fraction * num_frames), max(1, round(val_fraction * num_frames))
    test_first = num_frames - n_test + 1
    val_last = (test_first - gap - 1) if n_test else num_frames
    val_first = val_last - n_val + 1
    train_last = val_first - gap - 1
    if train_last < 1:
        raise ValueError(f"{num_frames} frames at {fps:g} fps are too few for a {gap}-frame gap between "
                         f"train, validation ({n_val} frames) and test ({n_test} frames)")
    split = {"method": "temporal", "train": [1, train_last], "val": [val_first, val_last], "gap_frames": gap}
    split["test"] = [test_first, num_frames] if n_test else None
    return split


def frame_indices(span):
    """0-based frame indices of a 1-based inclusive [first, last] range."""
    return list(range(span[0] - 1, span[1]))


def write_mot(path, rows):
    """MOTChallenge results: one `frame,id,x,y,w,h,score,-1,-1,-1` line per (frame from 1, id,
    x1, y1, x2, y2, score)."""
    with open(path, "w") as f:
        for frame, track, x1, y1, x2, y2, score in rows:
            f.write(f"{frame},{track},{x1:.2f},{y1:.2f},{x2 - x1:.2f},{y2 - y1:.2f},{score:.4f},-1,-1,-1\n")
    return path


def write_sequence(folder, frames, rows, fps):
    """A video and its gt.txt in `folder` (which must exist): `rows` of (frame from 1, id, x, y, w, h,
    conf). Returns the video's path."""
    video = write_video(os.path.join(folder, "video.mp4"), frames, fps)
    with open(os.path.join(folder, "gt.txt"), "w") as f:
        f.writelines(f"{fr},{i},{x:.2f},{y:.2f},{w:.2f},{h:.2f},{c},-1,-1,-1\n" for fr, i, x, y, w, h, c in rows)
    return video
