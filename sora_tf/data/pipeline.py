"""tf.data input pipeline: sample frame indices in-graph, decode them with OpenCV, batch.

The pipeline yields uint8 clips at the model's H x W. Augmentation and normalisation run in the
model's graph on the accelerator (see `sora_tf.data.augment` and the model's `normalize` layer),
so the host moves 4x fewer bytes and export bakes preprocessing in for free.
"""
import logging
import threading

import numpy as np
import tensorflow as tf

from sora_tf.data.prepared import make_prepared_dataset
from sora_tf.data.sampling import epoch_stream, sample_indices, view_indices, without_autotune_stall
from sora_tf.data.video import VideoError, probe, read_frames, single_threaded_opencv
from sora_tf.progress import bar

log = logging.getLogger("sora_tf.data")


def eval_clip(path, clip_len, size, fps=0.0):
    """uint8 [T, H, W, 3]: the eval view of one video file, sampled as evaluation samples it (at
    `fps` frames per second, 0: over the whole video), as `predict` and `anomaly` read it."""
    count, rate = probe(path)
    stride = rate / fps if fps > 0 and rate > 0 else 0.0
    indices, _ = sample_indices(count, clip_len, training=False, stride=stride)
    return read_frames(path, indices.numpy(), size)


def per_video(videos, clip_len, size, fn, fps=0.0):
    """[(video, fn(its eval clip) or the error string)] for `predict` and `anomaly`: a video that
    is missing or cannot be decoded gets its error (which names it) and the rest go on."""
    results = []
    for video in bar(videos, "videos", unit="video"):
        try:
            clip = eval_clip(video, clip_len, size, fps)
        except (ValueError, OSError) as e:
            results.append((video, str(e)))
            continue
        results.append((video, fn(clip)))
    return results


class DecodeFailures:
    """Counts files that probed fine but failed when decoded for a batch (changed on disk, say)."""

    def __init__(self):
        self._lock = threading.Lock()
        self.paths = []

    def add(self, path, reason):
        with self._lock:
            self.paths.append((path, reason))


def make_dataset(paths, labels, counts, *, clip_len, size, training, batch_size, seed=0,
                 stride_range=1.0, strides=None, failures=None, cache=False, views=None, skip=0):
    """Batched dict elements {frames uint8 [B,T,H,W,3], label, padded, path}.

    Evaluation (`training=False`): every clip once, in the listing's order. Training: an endless
    stream of whole batches, after `skip` clips (see `epoch_stream`).

    Decoding is `tf.numpy_function` over OpenCV with `num_parallel_calls`: OpenCV releases the
    GIL while it decodes, so files decode in parallel with no Python loop over the dataset.
    `cache=True` decodes each whole video once, at H x W, keeps it in memory and samples clips
    from there every epoch: for data that fits, it takes decoding out of every later epoch.
    `strides`: per clip eval spacing in frames (see `sample_indices`), default whole video.
    `views=N` (eval) gives N temporal clips per video: frames [B, N, T, H, W, 3].
    """
    if not paths:
        raise ValueError("make_dataset needs at least one clip")
    single_threaded_opencv()
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

    def decoded(element, indices):
        frames, ok = tf.numpy_function(decode, [element["path"], indices], [tf.uint8, tf.bool])
        frames.set_shape([None, h, w, 3])
        ok.set_shape([])
        return {**element, "frames": frames, "ok": ok}

    def load(element, seed_pair):
        if views:
            grid = view_indices(element["count"], clip_len, views, element["stride"])
            flat = tf.reshape(grid, [-1])
            order = tf.argsort(flat)  # read_frames wants non-decreasing indices
            out = decoded(element, tf.gather(flat, order))
            frames = tf.gather(out["frames"], tf.math.invert_permutation(order))
            return {**out, "frames": tf.reshape(frames, [views, clip_len, h, w, 3]),
                    "padded": element["count"] < clip_len}
        indices, padded = sample_indices(element["count"], clip_len, training, seed_pair,
                                         stride_range, element["stride"])
        out = decoded(element, indices)
        return {**out, "frames": tf.ensure_shape(out["frames"], [clip_len, h, w, 3]), "padded": padded}

    def load_video(element):
        return decoded(element, tf.range(element["count"]))

    def take_clip(element, seed_pair):
        count = tf.shape(element["frames"], out_type=tf.int64)[0]
        indices, padded = sample_indices(count, clip_len, training, seed_pair, stride_range, element["stride"])
        return {**element, "frames": tf.gather(element["frames"], indices), "padded": padded}

    ds = tf.data.Dataset.from_tensor_slices(
        {"path": list(map(str, paths)), "label": np.asarray(labels, np.int32),
         "count": np.asarray(counts, np.int64),
         "stride": np.zeros(len(paths), np.float32) if strides is None else np.asarray(strides, np.float32)})
    if cache and views:
        raise ValueError("cache is for training epochs, views for evaluation: not both")
    if cache:
        ds = ds.map(load_video, num_parallel_calls=tf.data.AUTOTUNE).filter(_decoded).cache()
    if training:
        ds = epoch_stream(ds, len(paths), seed=seed, skip=skip, batch_size=batch_size,
                          make_clip=take_clip if cache else load, keep=None if cache else _decoded,
                          finish=_drop_ok)
        return without_autotune_stall(ds.prefetch(tf.data.AUTOTUNE))
    ds = tf.data.Dataset.zip(ds, tf.data.Dataset.range(len(paths)).map(lambda i: tf.stack([seed, i])))
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE).filter(_decoded).map(_drop_ok)
    return without_autotune_stall(ds.batch(batch_size).prefetch(tf.data.AUTOTUNE))


def dataset_for(listing, **kwargs):
    """`make_dataset` for a Listing: decoded from its video files, or read from its prepared
    TFRecords when it came from a prepared folder (same elements, up to JPEG loss)."""
    if listing.prepared:
        kwargs.pop("failures", None)  # prepared clips decoded once already; failures were counted then
        return make_prepared_dataset(listing.prepared, listing.records, **kwargs)
    return make_dataset(listing.paths, listing.labels, listing.counts, **kwargs)


def _decoded(element):
    return element["ok"]


def _drop_ok(element):
    return {k: element[k] for k in ("frames", "label", "padded", "path")}


def _pair(element):
    return element["frames"], element["label"]


def supervised(ds):
    """(frames, label) pairs for `keras.Model.fit`."""
    return ds.map(_pair)
