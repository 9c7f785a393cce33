"""The prepared fast path: sharded TFRecords, one `tf.train.SequenceExample` per clip, frames
JPEG-encoded, decoded in-graph by `tf.io.decode_jpeg`: no Python in the input loop.

Video decoding needs OpenCV through `tf.numpy_function`, which holds the GIL around each call;
JPEG decoding of small frames is cheap, native and parallel. For many epochs over the same
clips, decode the videos once here: `python -m sora_tf prepare --data DIR --out DIR`.

A prepared folder holds `clips-SSSSS-of-NNNNN.tfrecord` shards and `prepared.json` (classes,
clip list with labels, decoded frame counts, frame rates and groups, stored frame size). It is
built in a temp folder and renamed into place, so an interrupted `prepare` leaves nothing that
looks complete.
"""
import json
import logging
import math
import os
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import tensorflow as tf

from sora_tf.atomic import atomic_dir, check_replaceable
from sora_tf.data.sampling import epoch_stream, sample_indices, view_indices, without_autotune_stall
from sora_tf.data.video import VideoError, read_frames
from sora_tf.progress import bar

log = logging.getLogger("sora_tf.data")

FORMAT = "sora_tf.prepared/1"
MANIFEST = "prepared.json"


def is_prepared(path):
    return os.path.isfile(os.path.join(path, MANIFEST))


def _encode(path, count, size, quality):
    frames = read_frames(path, np.arange(count), (size, size))
    params = [cv2.IMWRITE_JPEG_QUALITY, quality]
    return [cv2.imencode(".jpg", cv2.cvtColor(f, cv2.COLOR_RGB2BGR), params)[1].tobytes() for f in frames]


def _example(index, label, jpegs):
    context = tf.train.Features(feature={
        "index": tf.train.Feature(int64_list=tf.train.Int64List(value=[index])),
        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label]))})
    frames = tf.train.FeatureList(feature=[tf.train.Feature(bytes_list=tf.train.BytesList(value=[j]))
                                           for j in jpegs])
    return tf.train.SequenceExample(context=context, feature_lists=tf.train.FeatureLists(
        feature_list={"frames": frames})).SerializeToString()


def prepare(listing, out, size=128, shard_clips=64, quality=90, workers=None):
    """Write `listing`'s clips to `out` (whole videos, frames at size x size); returns `out`.

    A video that fails to decode now is skipped, named and counted in prepared.json.
    """
    if size < 8 or not 1 <= quality <= 100 or shard_clips < 1:
        raise ValueError(f"bad prepare settings: size={size}, quality={quality}, shard_clips={shard_clips}")
    check_replaceable(out, MANIFEST, "prepared data")
    n = len(listing.paths)
    shards = math.ceil(n / shard_clips)
    clips, skipped = [], [{"path": p, "reason": r} for p, r in listing.skipped]

    def encode(i):
        try:
            return _encode(listing.paths[i], listing.counts[i], size, quality)
        except VideoError as e:
            return str(e)

    with atomic_dir(out) as tmp, ThreadPoolExecutor(workers or os.cpu_count()) as pool:
        names = []
        for s in range(shards):
            name = f"clips-{s:05d}-of-{shards:05d}.tfrecord"
            ids = range(s * shard_clips, min(n, (s + 1) * shard_clips))
            with tf.io.TFRecordWriter(os.path.join(tmp, name)) as writer:
                for i, jpegs in zip(ids, bar(pool.map(encode, ids), f"prepare shard {s + 1}/{shards}",
                                             len(ids), "clip")):
                    if isinstance(jpegs, str):
                        log.warning("skipping %s: %s", listing.paths[i], jpegs)
                        skipped.append({"path": listing.paths[i], "reason": jpegs})
                        continue
                    writer.write(_example(len(clips), listing.labels[i], jpegs))
                    clips.append({"path": listing.paths[i], "label": listing.labels[i], "count": len(jpegs),
                                  "fps": listing.fps[i] if listing.fps else 0.0,
                                  "group": listing.groups[i] if listing.groups else None})
            names.append(name)
        with open(os.path.join(tmp, MANIFEST), "w") as f:
            json.dump({"format": FORMAT, "classes": listing.classes, "size": size, "quality": quality,
                       "shards": names, "clips": clips, "skipped": skipped}, f, indent=1)
    log.info("prepared %d clips in %d shards at %s (%d skipped)", len(clips), shards, out, len(skipped))
    return out


def load_manifest(path):
    with open(os.path.join(path, MANIFEST)) as f:
        manifest = json.load(f)
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{path}: prepared format {manifest.get('format')!r}, expected {FORMAT!r}")
    return manifest


def _parse(record):
    context, sequences = tf.io.parse_single_sequence_example(
        record, context_features={"index": tf.io.FixedLenFeature([], tf.int64),
                                  "label": tf.io.FixedLenFeature([], tf.int64)},
        sequence_features={"frames": tf.io.FixedLenSequenceFeature([], tf.string)})
    return {"index": context["index"], "label": tf.cast(context["label"], tf.int32),
            "jpegs": sequences["frames"]}


def read_records(root, indices, training, cache=False):
    """Dataset of {index, label, jpegs} for the records in `indices`, in a fixed order (training
    shuffles them per epoch afterwards): shards interleaved in parallel while training, read in
    order for evaluation, so its clips come in the listing's order."""
    manifest = load_manifest(root)
    files = [os.path.join(root, s) for s in manifest["shards"]]
    ds = tf.data.Dataset.from_tensor_slices(files)
    ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(4, len(files)) if training else 1,
                       num_parallel_calls=tf.data.AUTOTUNE)
    wanted = tf.constant(sorted(set(indices)), tf.int64)
    ds = ds.map(_parse, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.filter(lambda e: tf.reduce_any(tf.equal(wanted, e["index"])))
    return ds.cache() if cache else ds


def decode_jpegs(jpegs, size):
    """JPEG strings [N] -> uint8 [N, H, W, 3] at `size`, in-graph (area resampling if resized)."""
    frames = tf.map_fn(lambda b: tf.io.decode_jpeg(b, channels=3), jpegs,
                       fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8))
    same = tf.reduce_all(tf.equal(tf.shape(frames)[1:3], size))
    resized = tf.cond(same, lambda: frames, lambda: tf.cast(tf.round(tf.image.resize(
        frames, size, method="area", antialias=True)), tf.uint8))
    return tf.ensure_shape(resized, [None, *size, 3])


def make_prepared_dataset(root, records, *, clip_len, size, training, batch_size, seed=0,
                          stride_range=1.0, strides=None, cache=False, views=None, skip=0):
    """`make_dataset`'s elements, read from a prepared folder: clips sampled from the stored
    frames with the same `sample_indices` / `view_indices`, JPEGs decoded in-graph; for training,
    the same endless stream (`epoch_stream`)."""
    manifest = load_manifest(root)
    total = len(manifest["clips"])
    stride_table = np.zeros(total, np.float32)
    if strides is not None:
        stride_table[np.asarray(records, int)] = strides
    stride_table = tf.constant(stride_table)
    paths = tf.constant([c["path"] for c in manifest["clips"]])
    h, w = size

    def load(element, seed_pair):
        jpegs, count = element["jpegs"], tf.shape(element["jpegs"], out_type=tf.int64)[0]
        stride = tf.gather(stride_table, element["index"])
        if views:
            grid = view_indices(count, clip_len, views, stride)
            frames = tf.reshape(decode_jpegs(tf.gather(jpegs, tf.reshape(grid, [-1])), size),
                                [views, clip_len, h, w, 3])
            padded = count < clip_len
        else:
            indices, padded = sample_indices(count, clip_len, training, seed_pair, stride_range, stride)
            frames = decode_jpegs(tf.gather(jpegs, indices), size)
            frames = tf.ensure_shape(frames, [clip_len, h, w, 3])
        return {"frames": frames, "label": element["label"], "padded": padded,
                "path": tf.gather(paths, element["index"])}

    ds = read_records(root, records, training, cache)
    if training:
        ds = epoch_stream(ds, len(set(records)), seed=seed, skip=skip, make_clip=load,
                          batch_size=batch_size)
        return without_autotune_stall(ds.prefetch(tf.data.AUTOTUNE))
    ds = tf.data.Dataset.zip(ds, tf.data.Dataset.range(len(records)).map(lambda i: tf.stack([seed, i])))
    return without_autotune_stall(ds.map(load, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size)
                                  .prefetch(tf.data.AUTOTUNE))
