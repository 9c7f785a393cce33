"""The embedded default dataset: generated motion clips written as real encoded video files.

Seven classes that only time tells apart: `static`, `left`, `right`, `up`, `down`, `zoom`
(in or out) and `rotate`. Each clip is a textured object moving over a cluttered, noisy
background, with static textured distractors and a random-walk camera jitter. Start positions,
scales and angles are drawn from the same ranges for every class, so any single frame looks
alike across classes; only the motion differs. Deterministic for a given variant and seed.
"""
import csv
import dataclasses
import json
import logging
import os

import cv2
import numpy as np

from sora_tf.atomic import atomic_dir, check_replaceable
from sora_tf.data.video import write_video

log = logging.getLogger("sora_tf.data")

CLASSES = ("static", "left", "right", "up", "down", "zoom", "rotate")
SCALES = (0.6, 1.4)  # object scale range, shared by all classes
VERSION = 5  # bump when the generator's output changes, so caches rebuild


@dataclasses.dataclass(frozen=True)
class Variant:
    clips_per_class: int
    size: int  # square frame side, pixels
    frames: int
    fps: int = 12
    jitter: float = 0.35  # camera shake: random-walk step, pixels (held within +-2 px)


VARIANTS = {
    "tiny": Variant(clips_per_class=6, size=48, frames=16),
    "default": Variant(clips_per_class=600, size=96, frames=24),
}


def _texture(rng, h, w):
    """Stripes or a checkerboard in two random colours, plus grain."""
    a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    yy, xx = np.mgrid[0:h, 0:w]
    period = rng.integers(5, 10)  # coarse enough not to alias at the model's 64 px
    if rng.random() < 0.5:
        angle = rng.uniform(0, np.pi)
        mask = (np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period) > 0)
    else:
        mask = ((xx // period + yy // period) % 2).astype(bool)
    tex = np.where(mask[..., None], a, b).astype(np.float32)
    return np.clip(tex + rng.normal(0, 12, tex.shape), 0, 255).astype(np.uint8)


def _sprite(rng, side):
    """A textured shape (ellipse or polygon) and its alpha mask, `side` x `side`."""
    mask = np.zeros((side, side), np.uint8)
    c = side // 2
    if rng.random() < 0.5:
        # Elongated, so that a rotation turns the silhouette (a disc would only shimmer).
        axes = (int(c * rng.uniform(0.8, 0.95)), int(c * rng.uniform(0.35, 0.55)))
        cv2.ellipse(mask, (c, c), axes, rng.uniform(0, 180), 0, 360, 255, -1)
    else:
        k = rng.integers(3, 7)
        angles = np.sort(rng.uniform(0, 2 * np.pi, k))
        radii = c * rng.uniform(0.6, 0.95, k)
        squash = rng.uniform(0.45, 0.65)  # elongated too
        pts = np.stack([c + radii * np.cos(angles), c + squash * radii * np.sin(angles)], 1).astype(np.int32)
        cv2.fillPoly(mask, [pts], 255)
    return _texture(rng, side, side), mask


def _background(rng, side):
    """Low-frequency colour noise with random textured clutter blobs."""
    low = rng.integers(0, 256, (6, 6, 3)).astype(np.uint8)
    bg = cv2.resize(low, (side, side), interpolation=cv2.INTER_CUBIC).astype(np.float32)
    for _ in range(rng.integers(6, 12)):
        s = int(rng.integers(side // 10, side // 4))
        tex, mask = _sprite(rng, s)
        x, y = rng.integers(0, side - s, 2)
        m = (mask[..., None] / 255.0) * 0.8
        bg[y:y + s, x:x + s] = bg[y:y + s, x:x + s] * (1 - m) + tex * m
    return bg


def _paste(canvas, tex, mask, cx, cy, scale, angle):
    """Composite the sprite centred at (cx, cy), scaled and rotated, onto the float canvas."""
    side = tex.shape[0]
    m = cv2.getRotationMatrix2D((side / 2, side / 2), angle, scale)
    m[:, 2] += (cx - side / 2, cy - side / 2)
    h, w = canvas.shape[:2]
    warped = cv2.warpAffine(tex, m, (w, h), flags=cv2.INTER_LINEAR)
    alpha = cv2.warpAffine(mask, m, (w, h), flags=cv2.INTER_LINEAR)[..., None] / 255.0
    canvas *= 1 - alpha
    canvas += warped * alpha


def render_clip(cls, variant, rng):
    """uint8 [frames, size, size, 3] RGB for class name `cls`."""
    n, side = variant.frames, variant.size
    margin = side // 8
    bg = _background(rng, side + 2 * margin)
    obj_side = int(side * 0.32)
    tex, mask = _sprite(rng, obj_side)
    distractors = [(*_sprite(rng, int(side * rng.uniform(0.15, 0.3))),
                    rng.uniform(0.15, 0.85, 2) * side) for _ in range(rng.integers(1, 3))]
    t = np.arange(n, dtype=np.float32)
    speed = rng.uniform(1.4, 1.9) * side / 64  # pixels per frame
    travel = speed * (n - 1)
    scale0, angle0 = rng.uniform(*SCALES), rng.uniform(0, 360)
    lo, hi = obj_side * 0.5, side - obj_side * 0.5
    cx = np.full(n, rng.uniform(lo, hi))
    cy = np.full(n, rng.uniform(lo, hi))
    scale, angle = np.full(n, scale0), np.full(n, angle0)
    if cls in ("left", "right"):
        start = rng.uniform(lo, max(lo, hi - travel))
        cx = start + speed * t if cls == "right" else (lo + hi) - (start + speed * t)
    elif cls in ("up", "down"):
        start = rng.uniform(lo, max(lo, hi - travel))
        cy = start + speed * t if cls == "down" else (lo + hi) - (start + speed * t)
    elif cls == "zoom":
        # In or out between two scales inside the same range every class draws from.
        factor = rng.uniform(1.8, 2.3)
        small = rng.uniform(SCALES[0], SCALES[1] / factor)
        scale = small * factor ** (t / (n - 1))
        scale = scale if rng.random() < 0.5 else scale[::-1]
    elif cls == "rotate":
        angle = angle0 + rng.choice([-1, 1]) * rng.uniform(8, 14) * t
    jitter = np.cumsum(rng.normal(0, variant.jitter, (n, 2)), 0).clip(-2, 2).round().astype(int)
    gain = rng.uniform(0.8, 1.2)
    frames = np.empty((n, side, side, 3), np.uint8)
    for i in range(n):
        jx, jy = jitter[i]
        canvas = bg[margin + jy:margin + jy + side, margin + jx:margin + jx + side].copy()
        for d_tex, d_mask, (dx, dy) in distractors:
            _paste(canvas, d_tex, d_mask, dx - jx, dy - jy, 1.0, 0.0)
        _paste(canvas, tex, mask, cx[i] - jx, cy[i] - jy, scale[i], angle[i])
        canvas = canvas * gain + rng.normal(0, 4, canvas.shape)
        frames[i] = np.clip(canvas, 0, 255).astype(np.uint8)
    return frames


def default_root():
    """Where generated data is cached: `datasets/generated/` of the source tree, or $SORA_DATA_DIR."""
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return os.environ.get("SORA_DATA_DIR", os.path.join(repo, "datasets", "generated"))


def generate(out_dir, variant="default", seed=0):
    """Write the dataset to `out_dir` atomically (a temp dir renamed into place)."""
    spec = VARIANTS[variant]
    check_replaceable(out_dir, "dataset.json", "a generated dataset")
    with atomic_dir(out_dir) as tmp:
        rows = []
        for label, cls in enumerate(CLASSES):
            os.makedirs(os.path.join(tmp, cls))
            for i in range(spec.clips_per_class):
                rng = np.random.default_rng([seed, label, i])
                written = write_video(os.path.join(tmp, cls, f"{cls}_{i:04d}.mp4"),
                                      render_clip(cls, spec, rng), spec.fps)
                rows.append((os.path.relpath(written, tmp), cls))
        with open(os.path.join(tmp, "manifest.csv"), "w", newline="") as f:
            csv.writer(f).writerows([("path", "label"), *rows])
        meta = {"name": "moving_shapes", "variant": variant, "seed": seed, "version": VERSION,
                "classes": list(CLASSES), **dataclasses.asdict(spec),
                "hflip_changes_label": True,
                "note": "generated by sora_tf.data.synthetic; delete this folder to rebuild"}
        with open(os.path.join(tmp, "dataset.json"), "w") as f:
            json.dump(meta, f, indent=2)
    return out_dir


def cached(out, version, spec, build):
    """`out` if it holds generated data of `version` and `spec` (a Variant), else `build()`'s."""
    meta = os.path.join(out, "dataset.json")
    if os.path.isfile(meta):
        with open(meta) as f:
            found = json.load(f)
        if found.get("version") == version and all(found.get(k) == v for k, v in dataclasses.asdict(spec).items()):
            return out
    log.info("generating %s (first use)", out)
    return build()


def ensure(variant="default", seed=0, root=None):
    """The cached dataset directory for `variant`, generated on first use."""
    out = os.path.join(root or default_root(), f"moving_shapes-{variant}-s{seed}")
    return cached(out, VERSION, VARIANTS[variant], lambda: generate(out, variant, seed))
