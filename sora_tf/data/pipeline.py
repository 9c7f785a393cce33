"""tf.data input pipeline: sample frame indices in-graph, decode them with OpenCV, batch.

The pipeline yields uint8 clips at the model's H x W. Augmentation and normalisation run in the
model's graph on the accelerator (see `sora_tf.data.augment` and the model's `normalize` layer),
so the host moves 4x fewer bytes and export bakes preprocessing in for free.
"""
import logging
import threading

import numpy as np
import tensorflow as tf

from sora_tf.data.video import VideoError, read_frames

log = logging.getLogger("sora_tf.data")


def sample_indices(num_frames, clip_len, training, seed=None, max_stride=1):
    """T frame indices into a video of `num_frames` decoded frames, and whether it was padded.

    Eval: uniform over the whole video. Training: a random stride, fractional, between 1 and
    min(max_stride, the stride that spans the whole video), and a random start; so training
    sees the eval view's temporal scale as well as faster ones. Drawn statelessly from `seed`
    ([2] int) so a run repeats. A video shorter than T is padded by repeating frames evenly.
    """
    n = tf.cast(num_frames, tf.int64)
    t = tf.range(clip_len, dtype=tf.int64)
    padded = n < clip_len
    last = tf.cast(n - 1, tf.float32)
    if clip_len == 1:
        uniform = (n - 1) // 2 + tf.zeros([1], tf.int64)
    else:
        uniform = tf.cast(tf.round(tf.linspace(0.0, last, clip_len)), tf.int64)
    if not training:
        return uniform, padded
    full = last / max(clip_len - 1, 1)
    stride_hi = tf.maximum(tf.minimum(float(max_stride), full), 1.0)
    seeds = tf.random.experimental.stateless_split(seed, 2)
    stride = tf.random.stateless_uniform([], seeds[0], 1.0, stride_hi + 1e-6)
    span = (clip_len - 1) * stride
    start = tf.random.stateless_uniform([], seeds[1], 0.0, 1.0) * tf.maximum(last - span, 0.0)
    sampled = tf.minimum(tf.cast(tf.round(start + tf.cast(t, tf.float32) * stride), tf.int64), n - 1)
    return tf.where(padded, tf.minimum(t * n // clip_len, n - 1), sampled), padded


class DecodeFailures:
    """Counts files that probed fine but failed when decoded for a batch (changed on disk, say)."""

    def __init__(self):
        self._lock = threading.Lock()
        self.paths = []

    def add(self, path, reason):
        with self._lock:
            self.paths.append((path, reason))


def make_dataset(paths, labels, counts, *, clip_len, size, training, batch_size,
                 seed=0, max_stride=1, failures=None, shuffle_buffer=None, drop_remainder=None):
    """Batched dict elements {frames uint8 [B,T,H,W,3], label, padded, path}.

    Decoding is `tf.numpy_function` over OpenCV with `num_parallel_calls`: OpenCV releases the
    GIL while it decodes, so files decode in parallel with no Python loop over the dataset.
    """
    if not paths:
        raise ValueError("make_dataset needs at least one clip")
    failures = failures if failures is not None else DecodeFailures()
    h, w = size

    def decode(path, indices):
        path = path.decode()
        try:
            return read_frames(path, indices, (h, w)), True
        except VideoError as e:
            log.warning("skipping %s at decode time: %s", path, e)
            failures.add(path, str(e))
            return np.zeros((len(indices), h, w, 3), np.uint8), False

    def load(element, seed_pair):
        indices, padded = sample_indices(element["count"], clip_len, training, seed_pair, max_stride)
        frames, ok = tf.numpy_function(decode, [element["path"], indices], [tf.uint8, tf.bool])
        frames.set_shape([clip_len, h, w, 3])
        ok.set_shape([])
        return {"frames": frames, "label": element["label"], "padded": padded,
                "path": element["path"], "ok": ok}

    ds = tf.data.Dataset.from_tensor_slices(
        {"path": list(map(str, paths)), "label": np.asarray(labels, np.int32),
         "count": np.asarray(counts, np.int64)})
    if training:
        ds = ds.shuffle(shuffle_buffer or len(paths), seed=seed, reshuffle_each_iteration=True)
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    ds = tf.data.Dataset.zip(ds, seeds)
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=not training)
    ds = ds.filter(_decoded).map(_drop_ok)
    drop = training if drop_remainder is None else drop_remainder
    return ds.batch(batch_size, drop_remainder=drop and len(paths) >= batch_size).prefetch(tf.data.AUTOTUNE)


def _decoded(element):
    return element["ok"]


def _drop_ok(element):
    return {k: v for k, v in element.items() if k != "ok"}


def _pair(element):
    return element["frames"], element["label"]


def supervised(ds):
    """(frames, label) pairs for `keras.Model.fit`."""
    return ds.map(_pair)
