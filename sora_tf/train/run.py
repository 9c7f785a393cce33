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


def _datasets(config, listing, split, failures, first_epoch):
    """(training stream from `first_epoch`, validation clips, steps per epoch)."""
    size = (config.image_size, config.image_size)
    train = listing.subset(split["train"])
    val = listing.subset(split["val"])
    decoded_mb = sum(train.counts) * size[0] * size[1] * 3 / 2 ** 20
    cache = decoded_mb <= config.cache_mb
    log.info("training videos decoded at %dx%d: %.0f MB, %s", *size, decoded_mb,
             "kept in memory after the first epoch" if cache
             else f"over cache_mb={config.cache_mb}: decoded every epoch")
    steps = max(1, len(train.paths) // config.batch_size)  # whole batches of the training clips
    train_ds = dataset_for(train, clip_len=config.num_frames, size=size, training=True,
                           batch_size=config.batch_size, seed=config.seed, stride_range=config.stride_range,
                           strides=train.strides(config.fps), failures=failures, cache=cache,
                           skip=first_epoch * steps * config.batch_size)
    val_ds = dataset_for(val, clip_len=config.num_frames, size=size, training=False,
                         batch_size=config.batch_size, strides=val.strides(config.fps), failures=failures)
    return train_ds, val_ds, steps


def make_split(listing, config):
    """split.json's content: train, val and test clip indices (and paths). The manifest's own
    `split` column when it has one (`test` rows optional), else grouped when the data has groups
    (or `split=grouped`), else stratified: `test_fraction` of the clips held out first, then
    `val_fraction` of all clips taken from the rest for validation. Where the data is too small
    to hold a test part out (a grouped split needs groups to spare), there is none, and a warning."""
    method = config.split if config.split != "auto" else ("grouped" if listing.groups else "stratified")
    test_fraction = config.test_fraction
    if listing.splits:
        method = "manifest"
        parts = {name: [i for i, s in enumerate(listing.splits) if s == name] for name in ("train", "val", "test")}
        if not parts["train"] or not parts["val"]:
            raise ValueError("the manifest's split column needs both 'train' and 'val' clips")
        tr, va, te = parts["train"], parts["val"], parts["test"]
        log.info("split from the manifest's split column: %d train, %d val, %d test", len(tr), len(va), len(te))
    else:
        if method == "grouped" and not listing.groups:
            raise ValueError("split=grouped needs groups: a 'group' column in the CSV manifest or a videos.txt")
        labels = listing.labels
        groups = listing.groups if method == "grouped" else None

        def split(indices, fraction, seed):
            part_labels = [labels[i] for i in indices]
            if groups is None:
                a, b = stratified_split(part_labels, fraction, seed)
            else:
                a, b = grouped_split(part_labels, [groups[i] for i in indices], fraction, seed)
            return [indices[k] for k in a], [indices[k] for k in b]
        everything, te = list(range(len(labels))), []
        if test_fraction:
            try:
                rest, te = split(everything, test_fraction, config.seed + 1)
                tr, va = split(rest, config.val_fraction / (1 - test_fraction), config.seed)
            except ValueError as e:
                log.warning("%d clips: no test part held out (%s)", len(labels), e)
                te = []
        if not te:
            tr, va = split(everything, config.val_fraction, config.seed)
        if groups:
            log.info("grouped split: %d groups, none on two sides", len(set(groups)))
    split = {"method": method, "train": sorted(tr), "val": sorted(va), "test": sorted(te),
             "val_paths": [listing.paths[i] for i in sorted(va)], "test_paths": [listing.paths[i] for i in sorted(te)]}
    if listing.groups:
        split["val_groups"] = sorted({listing.groups[i] for i in va})
        split["test_groups"] = sorted({listing.groups[i] for i in te})
    return split


def newest_run(model_name, root="runs"):
    """The most recently changed `root/<model_name>-*` run with a last.keras, or an error."""
    found = [os.path.join(root, d) for d in os.listdir(root) if d.startswith(f"{model_name}-")
             and os.path.isfile(os.path.join(root, d, "last.keras"))] if os.path.isdir(root) else []
    if not found:
        raise FileNotFoundError(f"--resume: no run of {model_name} under {root}/ to resume; name one with --out")
    return max(found, key=lambda d: os.path.getmtime(os.path.join(d, "last.keras")))


def _saved_config(module, path):
    values = load_json(path)
    try:
        config = from_dict(module.Config, values)
        config.validate()
    except (TypeError, ValueError, AttributeError) as e:
        raise ValueError(f"{path}: not a config of this model ({e})") from None
    return config


def train(model_name, data=None, out=None, epochs=None, sets=(), preset=None,
          resume=False, strict=False, verbose=None):
    """Train `model_name` through its task's `fit`; returns the run directory."""
    module = models.get(model_name)
    task = tasks.task(model_name)
    if resume and out is None:
        out = newest_run(model_name)
        log.info("--resume without --out: the newest run of %s, %s", model_name, out)
    out = out or default_run_dir(model_name)
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"--out {out}: a file is there; a run is a folder")
    resuming = resume and os.path.isfile(os.path.join(out, "last.keras"))
    if resume and not resuming:
        raise FileNotFoundError(f"--resume: {out}/last.keras does not exist")
    if epochs is not None:
        if epochs < 1:
            raise ValueError(f"--epochs must be >= 1, got {epochs}")
        sets = [*sets, f"epochs={epochs}"]  # with the other overrides, so they validate together
    if resuming:
        saved = load_json(os.path.join(out, "run.json"), needs=("model", "data"))
        if saved["model"] != model_name:
            raise ValueError(f"--resume: {out} is a {saved['model']} run, not {model_name}")
        config = _saved_config(module, os.path.join(out, "config.json"))
        data = saved["data"]
        config = override(config, sets)
        first_epoch = load_json(os.path.join(out, "state.json"), needs=("epoch", "best"))["epoch"] + 1
        log.info("resuming %s from epoch %d", out, first_epoch + 1)
    else:
        if preset not in (None, "tiny", "default"):
            raise ValueError(f"unknown preset {preset!r}: use 'tiny' or 'default'")
        base = module.Config.tiny() if preset == "tiny" else module.Config()
        data = resolve_data(data, preset)
        config = override(base, sets)
        first_epoch = 0

    listing = list_clips(data, strict=strict)
    config = dataclasses.replace(config, num_classes=len(listing.classes))
    if getattr(config, "aug_flip", False) and _data_flags(data).get("hflip_changes_label"):
        log.info("%s says a horizontal flip changes the label: flip augmentation off", data)
        config = dataclasses.replace(config, aug_flip=False)
    config.validate()
    os.makedirs(out, exist_ok=True)
    if resuming:
        split = load_json(os.path.join(out, "split.json"), needs=("train", "val"))
    else:
        split = make_split(listing, config)
        save_json(os.path.join(out, "split.json"), split)
        save_json(os.path.join(out, "run.json"), {"model": model_name, "data": os.path.abspath(data)})
    save_json(os.path.join(out, "config.json"), dataclasses.asdict(config))
    save_json(os.path.join(out, "classes.json"), listing.classes)

    keras.utils.set_random_seed(config.seed)
    failures = DecodeFailures()
    train_ds, val_ds, steps = _datasets(config, listing, split, failures, first_epoch)
    task.fit(Job(module=module, model_name=model_name, config=config, out=out, data=data, preset=preset,
                 strict=strict, train_ds=train_ds, val_ds=val_ds, steps=steps,
                 train_labels=[listing.labels[i] for i in split["train"]],
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
