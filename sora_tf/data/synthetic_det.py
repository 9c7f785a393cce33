"""The embedded default for detection: a generated surveillance-like video of walking, person-like
figures with its MOTChallenge gt.txt, written as a real encoded video file.

A fixed camera over a cluttered background (textured blobs, lines, shadows); figures with a
head, a textured torso and swinging legs, of the height range a street camera sees, walk in
straight lines with some wobble, enter and leave at the edges and pass behind static posts
(occlusions) and in front of each other; non-person distractors (rolling discs, sliding boxes)
move too, so that motion alone does not mean a person. Deterministic for a variant and a seed.
"""
import dataclasses
import json
import logging
import os

import cv2
import numpy as np

from sora_tf.atomic import atomic_dir, check_replaceable
from sora_tf.data.mot import write_sequence
from sora_tf.data.synthetic import _background, _texture, cached, default_root

log = logging.getLogger("sora_tf.data")

VERSION = 1  # bump when the generator's output changes, so caches rebuild


@dataclasses.dataclass(frozen=True)
class Variant:
    width: int
    height: int
    frames: int
    walkers: int  # figures in view at once
    fps: int = 10


VARIANTS = {
    "tiny": Variant(width=128, height=96, frames=80, walkers=3),
    "default": Variant(width=384, height=288, frames=900, walkers=7),
}


class _Walker:
    def __init__(self, rng, width, height, first):
        self.height = rng.uniform(0.18, 0.4) * height
        self.width = self.height * rng.uniform(0.34, 0.42)
        side = rng.integers(4)  # enter from an edge (or anywhere at the start)
        speed = rng.uniform(0.006, 0.014) * width
        angle = rng.uniform(-0.6, 0.6) + (0, np.pi / 2, np.pi, -np.pi / 2)[side]
        if first:
            self.x, self.y = rng.uniform(0.1, 0.9) * width, rng.uniform(0.3, 0.95) * height
        else:
            self.x = (-0.05 * width, rng.uniform(0, width), 1.05 * width, rng.uniform(0, width))[side]
            self.y = (rng.uniform(0.3, 1) * height, -0.02 * height, rng.uniform(0.3, 1) * height, 1.05 * height)[side]
        self.vx, self.vy = speed * np.cos(angle), speed * np.sin(angle) * 0.6
        self.phase = rng.uniform(0, 2 * np.pi)
        self.torso = _texture(rng, 32, 16)
        self.legs = tuple(int(c) for c in rng.integers(0, 160, 3))
        self.skin = tuple(int(c) for c in rng.integers(90, 230, 3))

    def step(self, rng):
        self.x += self.vx + rng.normal(0, 0.3)
        self.y += self.vy + rng.normal(0, 0.2)
        self.phase += 0.5

    def box(self):
        """(x1, y1, x2, y2): x, y is the point between the feet."""
        return self.x - self.width / 2, self.y - self.height, self.x + self.width / 2, self.y

    def draw(self, canvas):
        x1, y1, x2, y2 = self.box()
        w, h = x2 - x1, y2 - y1
        cx = self.x
        swing = np.sin(self.phase) * w * 0.35
        leg_top = y1 + 0.55 * h
        thick = max(1, int(w * 0.22))
        for s in (swing, -swing):
            cv2.line(canvas, (int(cx), int(leg_top)), (int(cx + s), int(y2)), self.legs, thick, cv2.LINE_AA)
        tx1, tx2, ty1, ty2 = int(cx - w * 0.4), int(cx + w * 0.4), int(y1 + 0.17 * h), int(leg_top + 2)
        if tx2 > tx1 and ty2 > ty1:
            torso = cv2.resize(self.torso, (tx2 - tx1, ty2 - ty1), interpolation=cv2.INTER_LINEAR)
            _blit(canvas, torso, tx1, ty1)
        arm = np.sin(self.phase + np.pi) * w * 0.3
        cv2.line(canvas, (int(cx - w * 0.4), int(ty1 + 2)), (int(cx - w * 0.45 + arm), int(leg_top)),
                 self.legs, max(1, thick // 2), cv2.LINE_AA)
        cv2.ellipse(canvas, (int(cx), int(y1 + 0.09 * h)), (max(1, int(w * 0.24)), max(1, int(h * 0.09))),
                    0, 0, 360, self.skin, -1, cv2.LINE_AA)


def _blit(canvas, image, x, y):
    h, w = canvas.shape[:2]
    ax, ay, bx, by = max(x, 0), max(y, 0), min(x + image.shape[1], w), min(y + image.shape[0], h)
    if bx > ax and by > ay:
        canvas[ay:by, ax:bx] = image[ay - y:by - y, ax - x:bx - x]


def render(variant, seed=0):
    """(uint8 RGB frames [N, H, W, 3], gt rows (frame from 1, id, x, y, w, h, conf))."""
    rng = np.random.default_rng([seed, 7])
    w, h = variant.width, variant.height
    side = max(w, h)
    background = _background(rng, side)[:h, :w]
    for _ in range(6):  # straight edges: kerbs, walls, road markings
        p, q = rng.integers(0, side, 2), rng.integers(0, side, 2)
        cv2.line(background, tuple(int(v) for v in p), tuple(int(v) for v in q),
                 tuple(float(c) for c in rng.integers(0, 256, 3)), int(rng.integers(1, 4)))
    posts = [(int(rng.uniform(0.15, 0.85) * w), int(rng.uniform(0.02, 0.04) * w), tuple(float(c) for c in rng.integers(0, 200, 3)))
             for _ in range(2)]
    walkers, next_id = [], 1
    for _ in range(variant.walkers):
        walkers.append((next_id, _Walker(rng, w, h, first=True)))
        next_id += 1
    distractors = [[rng.uniform(0, w), rng.uniform(0, h), rng.uniform(-2, 2), rng.uniform(-1, 1),
                    rng.uniform(0.03, 0.08) * h, tuple(float(c) for c in rng.integers(0, 256, 3)), rng.random() < 0.5]
                   for _ in range(3)]
    frames, rows = np.empty((variant.frames, h, w, 3), np.uint8), []
    for f in range(variant.frames):
        canvas = background.copy()
        for d in distractors:
            d[0], d[1] = (d[0] + d[2]) % w, (d[1] + d[3]) % h
            r = int(d[4])
            if d[6]:
                cv2.circle(canvas, (int(d[0]), int(d[1])), r, d[5], -1, cv2.LINE_AA)
            else:
                cv2.rectangle(canvas, (int(d[0] - 2 * r), int(d[1] - r)), (int(d[0] + 2 * r), int(d[1] + r)), d[5], -1)
        for track, walker in sorted(walkers, key=lambda item: item[1].y):  # nearer (lower) figures in front
            walker.draw(canvas)
            x1, y1, x2, y2 = walker.box()
            cx1, cy1, cx2, cy2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
            if cx2 > cx1 and cy2 > cy1 and (cx2 - cx1) * (cy2 - cy1) >= 0.5 * (x2 - x1) * (y2 - y1):
                rows.append((f + 1, track, cx1, cy1, cx2 - cx1, cy2 - cy1, 1))
        for x, half, colour in posts:
            cv2.rectangle(canvas, (x - half, 0), (x + half, h), colour, -1)
        gain = 1 + 0.08 * np.sin(f / 37.0)
        frames[f] = np.clip(canvas * gain + rng.normal(0, 3, canvas.shape), 0, 255).astype(np.uint8)
        for k, (track, walker) in enumerate(walkers):
            walker.step(rng)
            x1, y1, x2, y2 = walker.box()
            if x2 < -0.1 * w or x1 > 1.1 * w or y1 > 1.1 * h or y2 < 0.2 * h:
                walkers[k] = (next_id, _Walker(rng, w, h, first=False))
                next_id += 1
    return frames, rows


def generate(out_dir, variant="default", seed=0):
    """Write the sequence (video.mp4 or .avi, gt.txt, dataset.json) to `out_dir` atomically."""
    spec = VARIANTS[variant]
    check_replaceable(out_dir, "dataset.json", "a generated dataset")
    frames, rows = render(spec, seed)
    with atomic_dir(out_dir) as tmp:
        write_sequence(tmp, frames, rows, spec.fps)
        with open(os.path.join(tmp, "dataset.json"), "w") as f:
            json.dump({"name": "walkers", "variant": variant, "seed": seed, "version": VERSION,
                       **dataclasses.asdict(spec), "boxes": len(rows),
                       "note": "generated by sora_tf.data.synthetic_det; delete this folder to rebuild"}, f, indent=2)
    return out_dir


def ensure(variant="default", seed=0, root=None):
    """The cached sequence folder for `variant`, generated on first use."""
    out = os.path.join(root or default_root(), f"walkers-{variant}-s{seed}")
    return cached(out, VERSION, VARIANTS[variant], lambda: generate(out, variant, seed))
