"""A run folder, read the same way by training, evaluation, export and the commands.

`runs/<model>-<time>/` holds config.json (the resolved config), run.json (model and data),
classes.json, split.json, data_report.json, last.keras (for --resume), best.keras (for evaluate,
predict and export), state.json, history.csv, tb/ (TensorBoard), metrics.json and the plots.
Everything in it is written through `sora_tf.atomic`.
"""
import json
import os
import time

import keras
import numpy as np

from sora_tf import models
from sora_tf.data.pipeline import dataset_for
from sora_tf.data.sources import list_clips


def load_json(path, needs=()):
    """The JSON in `path`, with an error naming the file when it is not JSON or, for a dict,
    lacks any of the keys `needs`."""
    try:
        with open(path) as f:
            value = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e}); was it written by sora_tf?") from None
    missing = [k for k in needs if not isinstance(value, dict) or k not in value]
    if missing:
        raise ValueError(f"{path}: no {', '.join(map(repr, missing))} in it; was it written by sora_tf?")
    return value


def default_run_dir(model_name):
    return os.path.join("runs", f"{model_name}-{time.strftime('%Y%m%d-%H%M%S')}")


def load_checkpoint(path):
    """keras.saving.load_model, with `path` in the error when the file holds no model that
    loads (for example one saved by an earlier design of the model)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such checkpoint")
    try:
        return keras.saving.load_model(path)
    except Exception as e:  # a truncated zip, a malformed config (TypeError, KeyError), ...
        raise ValueError(f"{path}: not a checkpoint this version of sora_tf can load "
                         f"({type(e).__name__}: {e})") from None


def load_run(run_dir):
    """(model, config, classes, run info) of a finished run, from its best checkpoint. The config
    is the one the model was built with: for a run saved before a field existed, the value that
    field had then (as the model's own loading fills it in), not today's default."""
    if not os.path.isdir(run_dir):
        raise FileNotFoundError(f"{run_dir}: no such run folder")
    info = load_json(os.path.join(run_dir, "run.json"), needs=("model", "data"))
    models.get(info["model"])  # imports the model's module, whose classes the checkpoint names
    classes = load_json(os.path.join(run_dir, "classes.json"))
    path = os.path.join(run_dir, "best.keras")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{run_dir}: no best.keras (did training finish an epoch?)")
    model = load_checkpoint(path)
    return model, model.config, classes, info


def source_listing(classes, info, data=None, strict=False):
    """All clips of `data`, or of the run's own data, checked against the run's classes."""
    source = data or info["data"]
    listing = list_clips(source, strict=strict)
    if listing.classes != classes:
        raise ValueError(f"{source}: classes {listing.classes} differ from the run's {classes}")
    return listing


def split_part(run_dir, listing, part, source):
    """The clips of the run's split `part` ("train", "val" or "test") within `listing` (of
    `source`); None for "test" when the run holds no test part out (older runs, small data), and
    for "val" when its validation clips trained (train_on_val)."""
    split = load_json(os.path.join(run_dir, "split.json"), needs=("train", "val", "val_paths"))
    if part == "train":
        return listing.subset(split["train"])
    if not split.get(part):
        return None
    wanted = {os.path.abspath(p) for p in split[f"{part}_paths"]}
    found = [i for i, p in enumerate(listing.paths) if p in wanted]
    if not found:
        raise ValueError(f"{run_dir}: none of its {len(wanted)} {part} clips is in {source} any more")
    return listing.subset(found)


def held_out(run_dir, listing, source):
    """("val" or "test", its clips): the run's validation clips, or its test clips where those
    trained (train_on_val); (None, None) when it holds out neither."""
    for part in ("val", "test"):
        clips = split_part(run_dir, listing, part, source)
        if clips is not None:
            return part, clips
    return None, None


def run_listing(run_dir, classes, info, data=None, part="val", strict=False):
    """The clips of a run's split `part` ("train", "val" or "test"), or all clips of `data` if given."""
    listing = source_listing(classes, info, data, strict)
    return listing if data is not None else split_part(run_dir, listing, part, info["data"])


def load_clips(listing, config, limit=None):
    """(uint8 clips [N, T, S, S, 3], labels) with eval sampling; `limit` spreads over the list."""
    if limit:
        listing = listing.spread(limit)
    ds = dataset_for(listing, clip_len=config.num_frames, size=(config.image_size,) * 2,
                     training=False, batch_size=16, strides=listing.strides(config.fps))
    clips, labels = [], []
    for batch in ds:
        clips.append(batch["frames"].numpy())
        labels.append(batch["label"].numpy())
    return np.concatenate(clips), np.concatenate(labels)


def run_summary(run_dir):
    """The run's main files that exist, as JSON."""
    return json.dumps({k: os.path.join(run_dir, v) for k, v in (
        ("run", ""), ("metrics", "metrics.json"), ("confusion_matrix", "confusion_matrix.png"),
        ("training_curves", "training_curves.png"), ("tensorboard", "tb"))
        if os.path.exists(os.path.join(run_dir, v))}, indent=2)
