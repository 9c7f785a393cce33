"""A training run: data listing, split, fit with checkpoints and logs, then evaluation.

Everything a run needs later lives in its folder: config.json (resolved, including the input
preprocessing that export bakes in), classes.json, split.json, data_report.json, last.keras,
best.keras, state.json, history.csv, tb/ (TensorBoard), metrics.json and the plots.
"""
import dataclasses
import json
import logging
import os
import sys
import time

import keras


from sora_tf import models
from sora_tf.config import from_dict, override
from sora_tf.data import synthetic
from sora_tf.data.augment import ClipAugment
from sora_tf.data.pipeline import DecodeFailures, dataset_for, supervised
from sora_tf.data.sources import list_clips
from sora_tf.data.split import grouped_split, stratified_split
from sora_tf.train.checkpoint import RunCheckpoint, load_json, save_json

log = logging.getLogger("sora_tf.train")


def resolve_data(data, preset):
    """The user's data, or the generated default (tiny variant for the tiny preset)."""
    if data:
        return data
    return synthetic.ensure("tiny" if preset == "tiny" else "default")


def augmenter(config):
    return ClipAugment(
        zoom=config.aug_zoom, translate=config.aug_translate, rotation_deg=config.aug_rotation_deg,
        flip=config.aug_flip, brightness=config.aug_brightness, contrast=config.aug_contrast,
        saturation=config.aug_saturation, hue=config.aug_hue, noise_std=config.aug_noise_std,
        seed=config.seed, name="augment")


def trainer_for(core, config):
    """uint8 clips -> augmentation (training only) -> core model -> probabilities."""
    frames = keras.Input((config.num_frames, config.image_size, config.image_size, 3),
                         dtype="uint8", name="frames")
    probabilities = core(augmenter(config)(frames))["probabilities"]
    return keras.Model(frames, probabilities, name="trainer")


def compile_trainer(trainer, config, steps_per_epoch):
    schedule = keras.optimizers.schedules.CosineDecay(
        config.learning_rate, decay_steps=max(1, config.epochs * steps_per_epoch), alpha=0.05)
    trainer.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=config.weight_decay),
                    loss=keras.losses.SparseCategoricalCrossentropy(), metrics=["accuracy"])


def _data_flags(data):
    meta = os.path.join(data, "dataset.json") if os.path.isdir(data) else None
    return load_json(meta) if meta and os.path.isfile(meta) else {}


def _datasets(config, listing, split, failures):
    size = (config.image_size, config.image_size)
    train = listing.subset(split["train"])
    val = listing.subset(split["val"])
    decoded_mb = sum(train.counts) * size[0] * size[1] * 3 / 2 ** 20
    cache = decoded_mb <= config.cache_mb
    log.info("training videos decoded at %dx%d: %.0f MB, %s", *size, decoded_mb,
             "kept in memory after the first epoch" if cache
             else f"over cache_mb={config.cache_mb}: decoded every epoch")
    train_ds = dataset_for(train, clip_len=config.num_frames, size=size, training=True,
                           batch_size=config.batch_size, seed=config.seed, stride_range=config.stride_range,
                           strides=train.strides(config.fps), failures=failures, cache=cache)
    val_ds = dataset_for(val, clip_len=config.num_frames, size=size, training=False,
                         batch_size=config.batch_size, strides=val.strides(config.fps), failures=failures)
    return train_ds, val_ds, len(train.paths)


def make_split(listing, config):
    """split.json's content: grouped when the data has groups (or `split=grouped`), else stratified."""
    method = config.split if config.split != "auto" else ("grouped" if listing.groups else "stratified")
    if method == "grouped":
        if not listing.groups:
            raise ValueError("split=grouped needs groups: a 'group' column in the CSV manifest or a videos.txt")
        tr, va = grouped_split(listing.labels, listing.groups, config.val_fraction, config.seed)
        log.info("grouped split: %d groups, none on both sides", len(set(listing.groups)))
    else:
        tr, va = stratified_split(listing.labels, config.val_fraction, config.seed)
    split = {"method": method, "train": tr, "val": va, "val_paths": [listing.paths[i] for i in va]}
    if listing.groups:
        split["val_groups"] = sorted({listing.groups[i] for i in va})
    return split


def default_run_dir(model_name):
    return os.path.join("runs", f"{model_name}-{time.strftime('%Y%m%d-%H%M%S')}")


def train(model_name="sora_cls", data=None, out=None, epochs=None, sets=(), preset=None,
          resume=False, strict=False, verbose=None):
    """Train `model_name`; returns the run directory."""
    module = models.get(model_name)
    out = out or default_run_dir(model_name)
    resuming = resume and os.path.isfile(os.path.join(out, "last.keras"))
    if resume and not resuming:
        raise FileNotFoundError(f"--resume: {out}/last.keras does not exist")
    if resuming:
        saved = load_json(os.path.join(out, "run.json"))
        config = from_dict(module.Config, load_json(os.path.join(out, "config.json")))
        data = saved["data"]
        config = override(config, sets)
    else:
        if preset not in (None, "tiny", "default"):
            raise ValueError(f"unknown preset {preset!r}: use 'tiny' or 'default'")
        base = module.Config.tiny() if preset == "tiny" else module.Config()
        data = resolve_data(data, preset)
        config = override(base, sets)
    if epochs is not None:
        if epochs < 1:
            raise ValueError(f"--epochs must be >= 1, got {epochs}")
        config = dataclasses.replace(config, epochs=epochs)

    listing = list_clips(data, strict=strict)
    config = dataclasses.replace(config, num_classes=len(listing.classes))
    if config.aug_flip and _data_flags(data).get("hflip_changes_label"):
        log.info("%s says a horizontal flip changes the label: flip augmentation off", data)
        config = dataclasses.replace(config, aug_flip=False)
    config.validate()
    os.makedirs(out, exist_ok=True)
    if resuming:
        split = load_json(os.path.join(out, "split.json"))
    else:
        split = make_split(listing, config)
        save_json(os.path.join(out, "split.json"), split)
        save_json(os.path.join(out, "run.json"), {"model": model_name, "data": os.path.abspath(data)})
    save_json(os.path.join(out, "config.json"), dataclasses.asdict(config))
    save_json(os.path.join(out, "classes.json"), listing.classes)

    keras.utils.set_random_seed(config.seed)
    failures = DecodeFailures()
    train_ds, val_ds, n_train = _datasets(config, listing, split, failures)
    steps = max(1, n_train // config.batch_size)
    if resuming:
        trainer = keras.saving.load_model(os.path.join(out, "last.keras"))
        state = load_json(os.path.join(out, "state.json"))
        initial_epoch, best = state["epoch"] + 1, state["best"]
        core = trainer.get_layer(model_name)
        log.info("resuming %s from epoch %d", out, initial_epoch + 1)
    else:
        core = module.build(config)
        trainer = trainer_for(core, config)
        compile_trainer(trainer, config, steps)
        initial_epoch, best = 0, None
    callbacks = [
        RunCheckpoint(out, core, best=best),
        keras.callbacks.CSVLogger(os.path.join(out, "history.csv"), append=resuming),
        keras.callbacks.TensorBoard(os.path.join(out, "tb"), write_graph=False),
        keras.callbacks.EarlyStopping("val_accuracy", patience=config.patience, mode="max"),
    ]
    if initial_epoch < config.epochs:
        verbose = verbose if verbose is not None else (1 if sys.stdout.isatty() else 2)
        trainer.fit(supervised(train_ds), validation_data=supervised(val_ds), epochs=config.epochs,
                    initial_epoch=initial_epoch, callbacks=callbacks, verbose=verbose)
    report = listing.summary()
    report["decode_failures"] = [{"path": p, "reason": r} for p, r in failures.paths]
    report["skipped"] += len(failures.paths)
    save_json(os.path.join(out, "data_report.json"), report)
    if report["skipped"]:
        log.warning("%d file(s) skipped; see %s", report["skipped"], os.path.join(out, "data_report.json"))
    return out


def load_run(run_dir):
    """(model, config, classes, run info) of a finished run, from its best checkpoint."""
    info = load_json(os.path.join(run_dir, "run.json"))
    module = models.get(info["model"])
    config = from_dict(module.Config, load_json(os.path.join(run_dir, "config.json")))
    classes = load_json(os.path.join(run_dir, "classes.json"))
    path = os.path.join(run_dir, "best.keras")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{run_dir}: no best.keras (did training finish an epoch?)")
    return keras.saving.load_model(path), config, classes, info


def run_summary(run_dir):
    return json.dumps({k: os.path.join(run_dir, v) for k, v in (
        ("run", ""), ("metrics", "metrics.json"), ("confusion_matrix", "confusion_matrix.png"),
        ("training_curves", "training_curves.png"), ("tensorboard", "tb"))}, indent=2)


