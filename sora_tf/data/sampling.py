"""Which frames a clip takes, and views of a clip: graph ops shared by the video-file and the
prepared-TFRecord readers."""
import tensorflow as tf


def _eval_stride(last, clip_len, stride):
    """The eval spacing in frames: `stride` (0: spread over the whole video), at least 1."""
    full = last / max(clip_len - 1, 1)
    stride = tf.cast(stride, tf.float32)
    return tf.maximum(tf.where(stride > 0, tf.minimum(stride, full), full), 1.0)


def sample_indices(num_frames, clip_len, training, seed=None, stride_range=1.0, stride=0.0):
    """T frame indices into a video of `num_frames` decoded frames, and whether it was padded.

    `stride` is the eval spacing in frames (a frame-rate ratio, see `--fps`); 0 spreads the T
    frames over the whole video. Eval: that spacing, centred (the one view of `view_indices`).
    Training: a random fractional stride between stride/stride_range (at least 1) and the eval
    stride, and a random start; so training always sees the eval view's temporal scale as well
    as finer ones. Drawn statelessly from `seed` ([2] int) so a run repeats. A video shorter
    than T is padded by repeating frames evenly.
    """
    n = tf.cast(num_frames, tf.int64)
    t = tf.range(clip_len, dtype=tf.int64)
    padded = n < clip_len
    if not training:
        sampled = view_indices(num_frames, clip_len, 1, stride)[0]
    else:
        last = tf.cast(n - 1, tf.float32)
        base = _eval_stride(last, clip_len, stride)
        seeds = tf.random.experimental.stateless_split(seed, 2)
        low = tf.maximum(base / stride_range, 1.0)
        step = tf.random.stateless_uniform([], seeds[0], low, base + 1e-6)
        span = (clip_len - 1) * step
        start = tf.random.stateless_uniform([], seeds[1], 0.0, 1.0) * tf.maximum(last - span, 0.0)
        picked = tf.round(start + tf.cast(t, tf.float32) * step)
        sampled = tf.minimum(tf.cast(picked, tf.int64), n - 1)
    return tf.where(padded, tf.minimum(t * n // clip_len, n - 1), sampled), padded


def view_indices(num_frames, clip_len, views, stride=0.0):
    """[views, T] indices for multi-view evaluation: `views` windows at the eval stride, spread
    evenly from the start to the end of the video (they coincide when one window spans it);
    one view is centred."""
    n = tf.cast(num_frames, tf.int64)
    last = tf.cast(n - 1, tf.float32)
    base = _eval_stride(last, clip_len, stride)
    room = tf.maximum(last - (clip_len - 1) * base, 0.0)
    starts = tf.linspace(0.0, 1.0, views) * room if views > 1 else tf.fill([1], room / 2)
    picked = tf.round(starts[:, None] + tf.range(clip_len, dtype=tf.float32)[None] * base)
    return tf.minimum(tf.cast(picked, tf.int64), n - 1)


def crop_views(frames, crops):
    """[B, V, T, H, W, 3] -> [B, V * crops, T, H, W, 3]: 1 = the whole frame; 3 = left, centre
    and right crops of 90% of the side (inside the training zoom range), resized back."""
    if crops == 1:
        return frames
    if crops != 3:
        raise ValueError(f"spatial crops must be 1 or 3, got {crops}")
    shape = tf.shape(frames)
    h, w = frames.shape[3], frames.shape[4]
    images = tf.reshape(frames, [-1, h, w, 3])
    n = tf.shape(images)[0]
    out = []
    for x0 in (0.0, 0.05, 0.1):
        boxes = tf.tile([[0.05, x0, 0.95, x0 + 0.9]], [n, 1])
        crop = tf.image.crop_and_resize(tf.cast(images, tf.float32), boxes, tf.range(n), [h, w])
        out.append(tf.reshape(crop, shape))
    return tf.concat(out, axis=1)


def without_autotune_stall(ds):
    """`ds` with tf.data's autotuner off; AUTOTUNE parallelism then defaults to the core count.

    The autotuner's thread sleeps on a doubling period, and destroying an iterator waits for its
    next wake-up, so every pass over a dataset (each epoch, each validation) could end seconds
    late; with it off, passes decode at the same rate and end on time (docs/data.md).
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.with_options(options)


def epoch_stream(elements, count, *, seed, skip, make_clip, batch_size, keep=None, finish=None):
    """Training batches without end (fit takes the run's steps per epoch from it): the `count`
    `elements` in a new order each pass, drawn from `seed`, and for each clip
    `make_clip(element, seed_pair)` with a seed pair of its own, (seed, position in the stream).
    The same command gives the same batches. `skip` clips are passed over first, before any
    decoding: a run resumed after k epochs of N batches skips k N batch_size clips and gets the
    batches the uninterrupted run had next. `keep`: a filter after `make_clip` (clips that
    failed to decode), `finish` a map after it."""
    stream = elements.shuffle(count, seed=seed, reshuffle_each_iteration=True).repeat().skip(skip)
    seeds = tf.data.Dataset.range(skip, 2 ** 62).map(lambda i: tf.stack([tf.constant(seed, tf.int64), i]))
    clips = tf.data.Dataset.zip(stream, seeds).map(make_clip, num_parallel_calls=tf.data.AUTOTUNE)
    if keep is not None:
        clips = clips.filter(keep)
    if finish is not None:
        clips = clips.map(finish)
    return clips.batch(batch_size, drop_remainder=True)
