"""A training run: data listing, split, datasets, then the model's task fits it into the run folder
(see `sora_tf.runs` for what the folder holds)."""
import dataclasses
import logging
import os
import sys

import keras

from sora_tf import models, train as tasks
from sora_tf.atomic import save_json
from sora_tf.config import from_dict, override
from sora_tf.data import synthetic
from sora_tf.data.pipeline import DecodeFailures, dataset_for
from sora_tf.data.sources import list_clips
from sora_tf.data.split import grouped_split, stratified_split
from sora_tf.runs import default_run_dir, load_json
from sora_tf.train.fitting import Job

log = logging.getLogger("sora_tf.train")


def resolve_data(data, preset):
    """The user's data, or the generated default (tiny variant for the tiny preset)."""
    if data:
        return data
    return synthetic.ensure("tiny" if preset == "tiny" else "default")


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
    """split.json's content: the manifest's own `split` column when it has one, else grouped when
    the data has groups (or `split=grouped`), else stratified."""
    method = config.split if config.split != "auto" else ("grouped" if listing.groups else "stratified")
    if listing.splits:
        method = "manifest"
        tr = [i for i, s in enumerate(listing.splits) if s == "train"]
        va = [i for i, s in enumerate(listing.splits) if s == "val"]
        if not tr or not va:
            raise ValueError("the manifest's split column needs both 'train' and 'val' clips")
        log.info("split from the manifest's split column: %d train, %d val", len(tr), len(va))
    elif method == "grouped":
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


def train(model_name, data=None, out=None, epochs=None, sets=(), preset=None,
          resume=False, strict=False, verbose=None):
    """Train `model_name` through its task's `fit`; returns the run directory."""
    module = models.get(model_name)
    task = tasks.task(model_name)
    out = out or default_run_dir(model_name)
    resuming = resume and os.path.isfile(os.path.join(out, "last.keras"))
    if resume and not resuming:
        raise FileNotFoundError(f"--resume: {out}/last.keras does not exist")
    if epochs is not None:
        if epochs < 1:
            raise ValueError(f"--epochs must be >= 1, got {epochs}")
        sets = [*sets, f"epochs={epochs}"]  # with the other overrides, so they validate together
    if resuming:
        saved = load_json(os.path.join(out, "run.json"))
        config = from_dict(module.Config, load_json(os.path.join(out, "config.json")))
        data = saved["data"]
        config = override(config, sets)
        log.info("resuming %s from epoch %d", out, load_json(os.path.join(out, "state.json"))["epoch"] + 2)
    else:
        if preset not in (None, "tiny", "default"):
            raise ValueError(f"unknown preset {preset!r}: use 'tiny' or 'default'")
        base = module.Config.tiny() if preset == "tiny" else module.Config()
        data = resolve_data(data, preset)
        config = override(base, sets)

    listing = list_clips(data, strict=strict)
    config = dataclasses.replace(config, num_classes=len(listing.classes))
    if getattr(config, "aug_flip", False) and _data_flags(data).get("hflip_changes_label"):
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
    task.fit(Job(module=module, model_name=model_name, config=config, out=out, data=data, preset=preset,
                 strict=strict, train_ds=train_ds, val_ds=val_ds, steps=max(1, n_train // config.batch_size),
                 resuming=resuming, verbose=verbose if verbose is not None else (1 if sys.stdout.isatty() else 2),
                 train=train))
    state = os.path.join(out, "state.json")
    if os.path.isfile(state):
        save_json(state, {**load_json(state), "finished": True})
    report = listing.summary()
    report["decode_failures"] = [{"path": p, "reason": r} for p, r in failures.paths]
    report["skipped"] += len(failures.paths)
    save_json(os.path.join(out, "data_report.json"), report)
    if report["skipped"]:
        log.warning("%d file(s) skipped; see %s", report["skipped"], os.path.join(out, "data_report.json"))
    return out
