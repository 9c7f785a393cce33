"""The detection task: clips of an annotated sequence with boxes moved by the augmentation,
CenterNet/TTFNet targets rendered in the graph, the single-frame twin trained beside the model,
and evaluation (sora_tf/train/detect_eval.py).

Shared by every model whose clip call returns {"heatmap", "sides"} maps at stride 4 and that
gives `stream()` (boxes and scores frame by frame), as sora_det does.
"""
import logging
import os

import cv2
import keras
import numpy as np
import tensorflow as tf

from sora_tf.atomic import save_json
from sora_tf.config import as_sets
from sora_tf.data import synthetic_det
from sora_tf.data.mot import FrameSet, frame_indices, load_sequence, temporal_split
from sora_tf.models.sora_det import STRIDE
from sora_tf.runs import load_json
from sora_tf.train.detect_eval import ValidationAP, describe, evaluate  # noqa: F401 (this task's evaluation)
from sora_tf.train.fitting import EarlyStop, Prepared, RunCheckpoint, log_callbacks, resume, warm_ema_optimizer

log = logging.getLogger("sora_tf.train")

CLASSES = ["person"]
PERSON, IGNORED, PADDING = 0, 1, -1


def default_data(preset):
    """The generated walkers sequence (its tiny variant for the tiny preset), built on first use."""
    return synthetic_det.ensure("tiny" if preset == "tiny" else "default")


def padded_boxes(sequence, max_objects):
    """(boxes [N, M, 4], labels [N, M], track ids [N, M], dropped) of every frame: people, then
    ignored regions, then padding (label -1, id -1); frames with more than M boxes keep the
    first M (`dropped` counts the rest)."""
    n = len(sequence.frames)
    boxes, labels = np.zeros((n, max_objects, 4), np.float32), np.full((n, max_objects), PADDING, np.int32)
    ids = np.full((n, max_objects), -1, np.int64)
    dropped = 0
    for i in range(n):
        found = np.concatenate([sequence.boxes[i], sequence.ignore[i]])[:max_objects]
        kinds = [PERSON] * len(sequence.boxes[i]) + [IGNORED] * len(sequence.ignore[i])
        dropped += max(0, len(kinds) - max_objects)
        boxes[i, :len(found)], labels[i, :len(found)] = found, kinds[:max_objects]
        people = sequence.ids[i][:max_objects]
        ids[i, :len(people)] = people
    return boxes, labels, ids, dropped


def _ellipse(h, w):
    """[h, w, 1] weights: 1 inside an ellipse inscribed in the box, fading to 0 at its edge."""
    y, x = np.mgrid[0:h, 0:w]
    r2 = ((x + 0.5 - w / 2) / (w / 2)) ** 2 + ((y + 0.5 - h / 2) / (h / 2)) ** 2
    return np.clip((1 - r2) * 3, 0, 1)[..., None].astype(np.float32)


def paste_people(clip, boxes, labels, ids, count, scale_range, rng, soft=False):
    """Copy-paste (Ghiasi et al., 2021) for clips: `count` people of the clip, each followed through
    its frames, pasted again elsewhere, scaled by one factor from `scale_range`, with their boxes
    added, so that people appear at sizes and on backgrounds the one camera's training part
    lacks (PETS09 trains on none taller than 130 px or on the grass, and tests on both). The
    patch is the box, or with `soft` an ellipse inside it fading into the destination; one move
    per person keeps its motion consistent over the frames. Works in place on numpy arrays."""
    t, h, w = clip.shape[:3]
    source = clip.copy()
    present = [i for i in set(ids[0][labels[0] == PERSON].tolist())
               if all(i in ids[k][labels[k] == PERSON] for k in range(t))]
    for track in rng.permutation(present)[:count]:
        rows = [int(np.flatnonzero((ids[k] == track) & (labels[k] == PERSON))[0]) for k in range(t)]
        first = boxes[0, rows[0]]
        scale = rng.uniform(*scale_range)
        bw, bh = (first[2] - first[0]) * scale, (first[3] - first[1]) * scale
        if bw < 2 or bh < 2 or bw >= w or bh >= h:
            continue
        x0, y0 = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
        for k in range(t):
            free = np.flatnonzero(labels[k] == PADDING)
            if not len(free):
                break
            x1, y1, x2, y2 = boxes[k, rows[k]]
            d = np.array([x0 + (x1 - first[0]) * scale, y0 + (y1 - first[1]) * scale,
                          x0 + (x2 - first[0]) * scale, y0 + (y2 - first[1]) * scale])
            d = np.clip(d, 0, [w, h, w, h]).round().astype(int)
            s = np.array([x1, y1, x2, y2]).round().astype(int)
            if d[2] - d[0] < 2 or d[3] - d[1] < 2 or s[2] - s[0] < 1 or s[3] - s[1] < 1:
                continue
            patch = cv2.resize(source[k, s[1]:s[3], s[0]:s[2]], (d[2] - d[0], d[3] - d[1]), interpolation=cv2.INTER_LINEAR)
            if soft:  # the person, not the rectangle of background around it
                alpha = _ellipse(*patch.shape[:2])
                patch = (alpha * patch + (1 - alpha) * clip[k, d[1]:d[3], d[0]:d[2]]).round().astype(np.uint8)
            clip[k, d[1]:d[3], d[0]:d[2]] = patch
            boxes[k, free[0]], labels[k, free[0]] = d, PERSON
    return clip, boxes, labels


def augmenters(config):
    """Keras's image preprocessing layers, which move boxes with the pixels. A clip is one image
    of T x 3 channels, so that one draw transforms every frame alike. (Keras 3.15's RandomCrop
    moves the boxes by another offset than the pixels, measured: `crop` does the crop.)"""
    geometric = [keras.layers.RandomZoom(tuple(config.aug_zoom), fill_mode="constant",
                                         bounding_box_format="xyxy", seed=config.seed + 1),
                 keras.layers.RandomTranslation(config.aug_translate, config.aug_translate, fill_mode="constant",
                                                bounding_box_format="xyxy", seed=config.seed + 2)]
    if config.aug_flip:
        geometric.insert(0, keras.layers.RandomFlip("horizontal", bounding_box_format="xyxy", seed=config.seed))
    photometric = [keras.layers.RandomBrightness(config.aug_brightness, value_range=(0, 255), seed=config.seed + 4),
                   keras.layers.RandomContrast(config.aug_contrast, value_range=(0, 255), seed=config.seed + 5)]
    return geometric, photometric


def crop(image, boxes, height, width, seed):
    """A random `height` x `width` crop of `image` [H, W, C] and its boxes [N, 4], shifted and
    clipped to the crop; `seed`: a stateless seed, so a resumed run draws the same crops."""
    shape = tf.shape(image)
    corner = tf.random.stateless_uniform([2], seed, maxval=1.0)
    oy = tf.cast(corner[0] * tf.cast(shape[0] - height + 1, tf.float32), tf.int32)
    ox = tf.cast(corner[1] * tf.cast(shape[1] - width + 1, tf.float32), tf.int32)
    image = image[oy:oy + height, ox:ox + width]
    shift = tf.cast(tf.stack([ox, oy, ox, oy]), tf.float32)
    boxes = tf.clip_by_value(boxes - shift, 0.0, tf.constant([width, height, width, height], tf.float32))
    return image, boxes


def render_targets(boxes, labels, height, width, config):
    """Targets of one clip's frames at stride 4: heatmap [T, h, w, 2] (Gaussian of each person,
    1 at its centre cell; ignored-region mask) and boxes [T, h, w, 5] (the box of the person
    whose Gaussian is highest at the cell, and the regression weight: that Gaussian's value)."""
    gh, gw = height // STRIDE, width // STRIDE
    x1, y1, x2, y2 = tf.unstack(boxes, axis=-1)  # [T, M]
    bw, bh = x2 - x1, y2 - y1
    person = tf.cast((labels == PERSON) & (bw >= 2) & (bh >= 2), tf.float32)
    ignored = tf.cast((labels == IGNORED) & (bw > 0) & (bh > 0), tf.float32)
    ci = tf.clip_by_value(tf.floor((x1 + x2) / 2 / STRIDE), 0, gw - 1)
    cj = tf.clip_by_value(tf.floor((y1 + y2) / 2 / STRIDE), 0, gh - 1)
    sx = tf.maximum(config.gaussian_alpha * bw / 6 / STRIDE, 0.5)
    sy = tf.maximum(config.gaussian_alpha * bh / 6 / STRIDE, 0.5)
    gx = tf.range(gw, dtype=tf.float32)[None, None, None, :]
    gy = tf.range(gh, dtype=tf.float32)[None, None, :, None]
    g = tf.exp(-(gx - ci[..., None, None]) ** 2 / (2 * sx[..., None, None] ** 2)
               - (gy - cj[..., None, None]) ** 2 / (2 * sy[..., None, None] ** 2)) * person[..., None, None]
    heat = tf.reduce_max(g, axis=1)  # [T, h, w]
    owner = tf.argmax(g, axis=1)
    box_target = tf.gather(boxes, owner, batch_dims=1)  # [T, h, w, 4]
    weight = heat * tf.cast(heat > 0.05, tf.float32)
    px, py = (gx[..., 0, :] + 0.5) * STRIDE, (gy[..., 0] + 0.5) * STRIDE  # [1, 1, w], [1, h, 1]
    inside = ((px[..., None, :] >= x1[..., None, None]) & (px[..., None, :] <= x2[..., None, None])
              & (py[..., None] >= y1[..., None, None]) & (py[..., None] <= y2[..., None, None]))
    mask = tf.reduce_max(tf.cast(inside, tf.float32) * ignored[..., None, None], axis=1)
    return tf.stack([heat, mask], -1), tf.concat([box_target, weight[..., None]], -1)


def clip_stream(sequence, indices, config, skip=0, padded=None):
    """Endless seeded stream of augmented training batches (uint8 clips, {"heatmap", "sides"}) of
    `num_frames` consecutive frames from `indices` (a contiguous range), from element `skip`;
    `padded`: `padded_boxes` of the sequence, when the caller has it."""
    t = config.num_frames
    starts = np.array([i for i in indices if i + t - 1 <= indices[-1]], np.int64)
    if not len(starts):
        raise ValueError(f"{len(indices)} training frames are fewer than num_frames={t}")
    frames = sequence.frames
    boxes, labels, ids, _ = padded or padded_boxes(sequence, config.max_objects)
    h, w = frames.shape[1:3]
    geometric, photometric = augmenters(config)

    def fetch(n, k):
        s = starts[k]
        clip, b, lab = frames[s:s + t].copy(), boxes[s:s + t].copy(), labels[s:s + t].copy()
        if config.aug_paste:
            rng = np.random.default_rng([config.seed, int(n)])
            paste_people(clip, b, lab, ids[s:s + t], config.aug_paste, config.aug_paste_scale, rng, config.aug_paste_soft)
        return clip, b, lab

    def augment(n, k):
        clip, b, lab = tf.numpy_function(fetch, [n, k], (tf.uint8, tf.float32, tf.int32))
        image = tf.reshape(tf.transpose(tf.cast(clip, tf.float32), [1, 2, 0, 3]), [h, w, t * 3])
        data = {"images": image, "bounding_boxes": {"boxes": tf.reshape(b, [-1, 4]),
                                                    "labels": tf.cast(tf.reshape(lab, [-1]), tf.float32)}}
        for layer in geometric:
            data = layer(data, training=True)
        ch, cw = config.crop_height, config.crop_width
        image, out_boxes = crop(data["images"], data["bounding_boxes"]["boxes"], ch, cw, tf.stack([config.seed, n]))
        for layer in photometric:
            image = layer(image, training=True)
        image = tf.transpose(tf.reshape(tf.clip_by_value(image, 0, 255), [ch, cw, t, 3]), [2, 0, 1, 3])
        out_boxes = tf.reshape(out_boxes, [t, -1, 4])
        out_labels = tf.cast(tf.round(tf.reshape(data["bounding_boxes"]["labels"], [t, -1])), tf.int32)
        heat, box = render_targets(out_boxes, out_labels, ch, cw, config)
        return tf.cast(tf.round(image), tf.uint8), {"heatmap": heat, "sides": box}

    index = tf.data.Dataset.random(seed=config.seed).map(lambda r: r % len(starts)).enumerate().skip(skip)
    return index.map(augment).batch(config.batch_size, drop_remainder=True).prefetch(2)


def prepare(config, data, out, resuming, first_epoch, strict):
    """Decode the sequence once, split it in time (or read the run's split.json when resuming)
    and build the training stream from `first_epoch` and the validation frame range."""
    config.validate()
    sequence = load_sequence(data, config.size)
    if resuming:
        split = load_json(os.path.join(out, "split.json"), needs=("train", "val"))
    else:
        split = temporal_split(len(sequence.frames), sequence.fps, config.val_fraction, config.test_fraction,
                               config.split_gap_seconds)
        split["fps"] = sequence.fps
        save_json(os.path.join(out, "split.json"), split)
    log.info("temporal split of %d frames: train %s, validation %s, test %s (gaps of %d frames)",
             len(sequence.frames), split["train"], split["val"], split["test"], split["gap_frames"])
    train_frames = frame_indices(split["train"])
    steps = config.steps_per_epoch or max(1, len(train_frames) // (config.batch_size * config.num_frames))
    padded = padded_boxes(sequence, config.max_objects)
    dropped = padded[3]
    if dropped:
        log.warning("%d box(es) over max_objects=%d per frame left out of training", dropped, config.max_objects)
    train_ds = clip_stream(sequence, train_frames, config, skip=first_epoch * steps * config.batch_size, padded=padded)

    def report():
        return {"source": sequence.source, "gt": sequence.gt_path, "frames": len(sequence.frames),
                "boxes": int(sum(map(len, sequence.boxes))), "ignored_regions": int(sum(map(len, sequence.ignore))),
                "clipped_boxes": sequence.clipped, "skipped": dropped, "native_size": list(sequence.native_size)}
    return Prepared(config, CLASSES, train_ds, FrameSet(sequence, frame_indices(split["val"])), steps, [], report)


@keras.saving.register_keras_serializable("sora_tf")
class HeatmapLoss(keras.losses.Loss):
    """CenterNet's penalty-reduced focal loss over the heatmap logits, over the number of people;
    cells inside ignored regions add no negative loss."""

    def call(self, y_true, y_pred):
        target, ignored = y_true[..., :1], y_true[..., 1:]
        p = tf.clip_by_value(tf.sigmoid(y_pred), 1e-4, 1 - 1e-4)
        pos = tf.cast(target >= 1.0 - 1e-6, tf.float32)
        loss = -(tf.math.log(p) * (1 - p) ** 2 * pos
                 + tf.math.log(1 - p) * p ** 2 * (1 - target) ** 4 * (1 - pos) * (1 - ignored))
        return tf.reduce_sum(loss) / tf.maximum(tf.reduce_sum(pos), 1.0)


@keras.saving.register_keras_serializable("sora_tf")
class BoxLoss(keras.losses.Loss):
    """TTFNet's box loss: weighted mean of 1 - GIoU between each cell's box (its centre minus and
    plus the predicted sides) and its person's box."""

    def __init__(self, weight=5.0, **kwargs):
        super().__init__(**kwargs)
        self.weight = weight

    def call(self, y_true, y_pred):
        target, w = y_true[..., :4], y_true[..., 4]
        shape = tf.shape(y_pred)
        cx = (tf.cast(tf.range(shape[-2]), tf.float32) + 0.5) * STRIDE
        cy = (tf.cast(tf.range(shape[-3]), tf.float32) + 0.5) * STRIDE
        cx, cy = cx[None, None, None, :], cy[None, None, :, None]
        px1, py1, px2, py2 = cx - y_pred[..., 0], cy - y_pred[..., 1], cx + y_pred[..., 2], cy + y_pred[..., 3]
        tx1, ty1, tx2, ty2 = tf.unstack(target, axis=-1)
        inter = (tf.nn.relu(tf.minimum(px2, tx2) - tf.maximum(px1, tx1))
                 * tf.nn.relu(tf.minimum(py2, ty2) - tf.maximum(py1, ty1)))
        union = (px2 - px1) * (py2 - py1) + (tx2 - tx1) * (ty2 - ty1) - inter + 1e-6
        hull = (tf.maximum(px2, tx2) - tf.minimum(px1, tx1)) * (tf.maximum(py2, ty2) - tf.minimum(py1, ty1)) + 1e-6
        giou = inter / union - (hull - union) / hull
        return self.weight * tf.reduce_sum(w * (1 - giou)) / tf.maximum(tf.reduce_sum(w), 1e-6)

    def get_config(self):
        return {**super().get_config(), "weight": self.weight}


def trainer(model, config, steps_per_epoch):
    """The compiled model that `fit` steps on: uint8 clips -> the model's maps, with the losses."""
    frames = keras.Input((config.num_frames, None, None, 3), dtype="uint8", name="frames")
    wrapped = keras.Model(frames, model(frames), name="trainer")
    wrapped.compile(optimizer=warm_ema_optimizer(config, steps_per_epoch, global_clipnorm=10.0),
                    loss={"heatmap": HeatmapLoss(), "sides": BoxLoss(config.box_loss_weight)},
                    jit_compile=config.jit_compile)
    return wrapped


def _train_ablation(job):
    """The single-frame twin (`temporal=false`) in `out/single_frame`, with the same schedule."""
    out = os.path.join(job.out, "single_frame")
    if os.path.isfile(os.path.join(out, "state.json")) and load_json(os.path.join(out, "state.json")).get("finished"):
        return
    sets = as_sets(job.config) + ["temporal=false", "ablation=false", "hog_baseline=false"]
    log.info("training the single-frame ablation in %s", out)
    resume_it = os.path.isfile(os.path.join(out, "last.keras"))
    job.train(job.model_name, job.data, out, sets=sets if not resume_it else [], preset=job.preset,
              resume=resume_it, strict=job.strict, verbose=job.verbose)


def fit(job):
    """fit() the model on augmented clips; best.keras at best validation AP50 (the stream over the
    validation frames). With `ablation`, the single-frame twin first."""
    config = job.config
    if config.ablation and config.temporal:
        _train_ablation(job)
        keras.utils.set_random_seed(config.seed)  # the model starts as it would without the twin
    if job.resuming:
        wrapped, initial_epoch, best, waited = resume(job.out)
        core = wrapped.get_layer(job.model_name)
    else:
        core = job.module.build(config)
        wrapped = trainer(core, config, job.steps)
        initial_epoch, best, waited = 0, None, 0
    average = keras.callbacks.SwapEMAWeights(swap_on_epoch=True) if wrapped.optimizer.use_ema else None
    callbacks = [ValidationAP(core, job.val_ds), *log_callbacks(job.out, job.resuming, job.backup),
                 RunCheckpoint(job.out, core, monitor="val_ap50", best=best, average=average),
                 EarlyStop("val_ap50", config.patience, best, waited)]
    if average is not None:
        callbacks.insert(0, average)
    if initial_epoch < config.epochs:
        wrapped.fit(job.train_ds, steps_per_epoch=job.steps, epochs=config.epochs, initial_epoch=initial_epoch,
                    callbacks=callbacks, verbose=job.verbose)
