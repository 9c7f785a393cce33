"""Clip data for the tasks whose models learn from labelled clips (classify, generate): the listing
of a class-per-folder directory or CSV manifest, its train/val/test split, and tf.data streams."""
import dataclasses
import logging
import os

from sora_tf.atomic import save_json
from sora_tf.data import synthetic
from sora_tf.data.pipeline import DecodeFailures, dataset_for
from sora_tf.data.sources import list_clips
from sora_tf.data.split import grouped_split, stratified_split
from sora_tf.runs import load_json
from sora_tf.train.fitting import Prepared

log = logging.getLogger("sora_tf.train")

SMALL_VALIDATION = 200  # clips: below it, `monitor="auto"` keeps the last epoch (no selection)


def default_data(preset):
    """The generated default clips (the tiny variant for the tiny preset), built on first use."""
    return synthetic.ensure("tiny" if preset == "tiny" else "default")


def _data_flags(data):
    meta = os.path.join(data, "dataset.json") if os.path.isdir(data) else None
    return load_json(meta) if meta and os.path.isfile(meta) else {}


def _datasets(config, listing, split, failures, first_epoch):
    """(training stream from `first_epoch`, validation clips or None, steps per epoch)."""
    size = (config.image_size, config.image_size)
    train = listing.subset(split["train"])
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
    val_ds = None
    if split["val"]:
        val = listing.subset(split["val"])
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


def validation_trains(split):
    """`split` with its validation clips moved into training, when it holds a test part out for
    the run's figures (else unchanged, with a warning)."""
    if not split["val"]:
        return split
    if not split["test"]:
        log.warning("train_on_val: no test part is held out, so the %d validation clips stay out of "
                    "training for the run's figures", len(split["val"]))
        return split
    log.info("train_on_val: the %d validation clips train too; the run's figures come from its %d test clips",
             len(split["val"]), len(split["test"]))
    moved = {"train": sorted(split["train"] + split["val"]), "val": [], "val_paths": [], "trained_on_val": True}
    if "val_groups" in split:
        moved["val_groups"] = []
    return {**split, **moved}


def prepare(config, data, out, resuming, first_epoch, strict):
    """List `data`'s clips, split them (or read the run's split.json when resuming), and build
    the training stream from `first_epoch` and the validation clips."""
    listing = list_clips(data, strict=strict)
    config = dataclasses.replace(config, num_classes=len(listing.classes))
    if getattr(config, "aug_flip", False) and _data_flags(data).get("hflip_changes_label"):
        log.info("%s says a horizontal flip changes the label: flip augmentation off", data)
        config = dataclasses.replace(config, aug_flip=False)
    config.validate()
    if resuming:
        split = load_json(os.path.join(out, "split.json"), needs=("train", "val"))
    else:
        split = make_split(listing, config)
    if hasattr(config, "for_data"):  # a recipe that depends on how many sources there are to learn from
        train = split["train"]
        sources = len({listing.groups[i] for i in train}) if listing.groups else len(train)
        config = config.for_data(sources)
        config.validate()
        log.info("%d training sources (%s): the %s recipe", sources,
                 "groups" if listing.groups else "clips, no groups named", config.recipe)
    if not resuming:
        if getattr(config, "train_on_val", "false") == "true":
            split = validation_trains(split)
        save_json(os.path.join(out, "split.json"), split)
    if getattr(config, "monitor", None) == "auto":
        # On a small validation part the checkpoint any figure picks is luck: accuracy moves in
        # steps of 1/n, and the loss kept a barely trained first epoch in 5 of 15 fight_surv fold
        # runs. The run keeps the averaged weights at the end of its schedule (docs/sora_cls.md).
        monitor = "last" if len(split["val"]) < SMALL_VALIDATION else "val_accuracy"
        if resuming:  # what the run followed so far (runs from before this setting: accuracy)
            monitor = load_json(os.path.join(out, "state.json")).get("monitor", "val_accuracy")
        log.info("%s: %s", f"{len(split['val'])} validation clips" if split["val"] else "no validation clips",
                 "the run keeps its last epoch, no early stop" if monitor == "last"
                 else f"checkpoints and early stopping follow {monitor}")
        config = dataclasses.replace(config, monitor=monitor)
    failures = DecodeFailures()
    train_ds, val_ds, steps = _datasets(config, listing, split, failures, first_epoch)

    def report():
        summary = listing.summary()
        summary["decode_failures"] = [{"path": p, "reason": r} for p, r in failures.paths]
        summary["skipped"] += len(failures.paths)
        return summary
    return Prepared(config, listing.classes, train_ds, val_ds, steps,
                    [listing.labels[i] for i in split["train"]], report)
