"""A clip as 28 hand-made numbers of its motion: the baseline `cv --baseline` fits beside a model.

16 frames spread over the whole video (as a clip model samples it by default), grey at 120 x 160,
and Farneback optical flow (OpenCV) between consecutive ones. The numbers say how much of the
frame moves and how fast, how that varies over the clip, how jerky the motion is, where its
magnitude changes (as Violent Flows does, Hassner et al. 2012), how spread its directions are,
how concentrated it is, and its divergence and curl. On fight_surv a logistic regression on them
matched sora_cls across unseen sources (docs/sora_cls.md, "Fourth study").
"""
import cv2
import numpy as np

from sora_tf.data.video import VideoError, probe, read_frames

FRAMES = 16
SIZE = (120, 160)
MOVING = 1.0  # pixels per step at 160 px width: below it a pixel counts as still

NAMES = tuple(f"{stat}_{over}" for stat in ("mean", "p90", "moving") for over in ("avg", "std", "max", "cv")) + tuple(
    f"changed{i}" for i in range(10)) + ("jerk", "jerk_moving", "direction_entropy", "concentration", "divergence", "curl")


def flows(frames):
    """[T-1, H, W, 2] Farneback flow between consecutive frames of uint8 RGB [T, H, W, 3]."""
    grey = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    return np.stack([cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0)
                     for a, b in zip(grey[:-1], grey[1:])]).astype(np.float32)


def statistics(flow):
    """The NAMES numbers of flow [T-1, H, W, 2] (T-1 >= 2), as float64 [len(NAMES)]."""
    m = np.hypot(flow[..., 0], flow[..., 1])
    moving = m > MOVING
    out = []
    for per_frame in (m.mean((1, 2)), np.percentile(m.reshape(len(m), -1), 90, axis=1), moving.mean((1, 2))):
        out += [per_frame.mean(), per_frame.std(), per_frame.max(), per_frame.std() / (per_frame.mean() + 1e-3)]
    change = np.abs(np.diff(m, axis=0))
    changed = (change > change.mean((1, 2), keepdims=True)).mean(0)
    out += list(np.histogram(changed, 10, (0, 1))[0] / changed.size)
    jerk = np.hypot(*np.moveaxis(np.diff(flow, axis=0), -1, 0))
    out.append(jerk.mean() / (m.mean() + 1e-3))
    out.append(jerk[moving[1:]].mean() / (m[moving].mean() + 1e-3) if moving[1:].any() else 0.0)
    if moving.any():
        angle = np.arctan2(flow[..., 1], flow[..., 0])[moving]
        p = np.histogram(angle, 8, (-np.pi, np.pi), weights=m[moving])[0]
        p = p / (p.sum() + 1e-9)
        out.append(-(p * np.log(p + 1e-9)).sum())
    else:
        out.append(0.0)
    energy = np.sort(m.mean(0).ravel())[::-1]
    out.append(energy[: max(1, energy.size // 20)].sum() / (energy.sum() + 1e-6))
    u, v = flow[..., 0], flow[..., 1]
    div = np.gradient(u, axis=2) + np.gradient(v, axis=1)
    curl = np.gradient(v, axis=2) - np.gradient(u, axis=1)
    out += [np.abs(div)[moving].mean(), np.abs(curl)[moving].mean()] if moving.any() else [0.0, 0.0]
    return np.asarray(out, np.float64)


def clip_statistics(path, count=None):
    """NAMES numbers of the video at `path` (`count`: its decoded frames, when already counted);
    VideoError (naming it) when it cannot be read."""
    n = count or probe(path)[0]
    if n < 3:
        raise VideoError(f"{path}: {n} decodable frame(s); motion statistics need 3")
    indices = np.round(np.linspace(0, n - 1, min(FRAMES, n))).astype(np.int64)
    return statistics(flows(read_frames(path, indices, SIZE)))
