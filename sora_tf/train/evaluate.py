"""`evaluate` on a trained run: metrics.json and plots."""
import logging
import os

import numpy as np
import tensorflow as tf

from sora_tf import models
from sora_tf.data.pipeline import DecodeFailures, crop_views, dataset_for
from sora_tf.data.sources import list_clips
from sora_tf.train.checkpoint import load_json, save_json
from sora_tf.train.metrics import classification_metrics, plot_confusion, plot_history
from sora_tf.train.run import load_run

log = logging.getLogger("sora_tf.train")


def predict_dataset(model, ds):
    """(labels, probabilities, paths) over a dataset, in its (deterministic) order."""
    labels, probs, paths = [], [], []
    for batch in ds:
        probs.append(np.asarray(model(batch["frames"], training=False)["probabilities"]))
        labels.append(batch["label"].numpy())
        paths.extend(p.decode() for p in batch["path"].numpy())
    return np.concatenate(labels), np.concatenate(probs), paths


def load_clips(listing, config, limit=None):
    """(uint8 clips [N, T, S, S, 3], labels) with eval sampling; `limit` spreads over the list."""
    if limit and len(listing.paths) > limit:
        listing = listing.subset(np.linspace(0, len(listing.paths) - 1, limit).round().astype(int).tolist())
    ds = dataset_for(listing, clip_len=config.num_frames, size=(config.image_size,) * 2,
                     training=False, batch_size=16, strides=listing.strides(config.fps))
    clips, labels = [], []
    for batch in ds:
        clips.append(batch["frames"].numpy())
        labels.append(batch["label"].numpy())
    return np.concatenate(clips), np.concatenate(labels)


def predict_views(model, ds, crops):
    """(labels, probabilities) with softmax averaged over every temporal clip x spatial crop."""
    labels, probs = [], []
    for batch in ds:
        frames = crop_views(batch["frames"], crops)  # [B, V, T, H, W, 3]
        b, v = frames.shape[:2]
        out = model(tf.reshape(frames, (b * v, *frames.shape[2:])), training=False)["probabilities"]
        probs.append(np.asarray(out).reshape(b, v, -1).mean(1))
        labels.append(batch["label"].numpy())
    return np.concatenate(labels), np.concatenate(probs)


def source_listing(classes, info, data=None, strict=False):
    """All clips of `data`, or of the run's own data, checked against the run's classes."""
    source = data or info["data"]
    listing = list_clips(source, strict=strict)
    if listing.classes != classes:
        raise ValueError(f"{source}: classes {listing.classes} differ from the run's {classes}")
    return listing


def split_part(run_dir, listing, part, source):
    """The clips of the run's split `part` ("train" or "val") within `listing` (of `source`)."""
    split = load_json(os.path.join(run_dir, "split.json"))
    if part == "train":
        return listing.subset(split["train"])
    wanted = {os.path.abspath(p) for p in split["val_paths"]}
    found = [i for i, p in enumerate(listing.paths) if p in wanted]
    if not found:
        raise ValueError(f"{run_dir}: none of its {len(wanted)} validation clips is in {source} any more")
    return listing.subset(found)


def run_listing(run_dir, classes, info, data=None, part="val", strict=False):
    """The clips of a run's split `part` ("train" or "val"), or all clips of `data` if given."""
    listing = source_listing(classes, info, data, strict)
    return listing if data is not None else split_part(run_dir, listing, part, info["data"])


def evaluate(run_dir, data=None, strict=False):
    """Write metrics.json and plots for the run's validation split (or all clips of `data`)."""
    if getattr(models.get(load_json(os.path.join(run_dir, "run.json"))["model"]), "TASK", "") == "generate":
        from sora_tf.train.generative import evaluate_generative
        return evaluate_generative(run_dir, data, strict)
    model, config, classes, info = load_run(run_dir)
    listing = run_listing(run_dir, classes, info, data, strict=strict)
    failures = DecodeFailures()
    common = dict(clip_len=config.num_frames, size=(config.image_size,) * 2, training=False,
                  batch_size=config.batch_size, strides=listing.strides(config.fps), failures=failures)
    ds = dataset_for(listing, **common)
    labels, probs, _ = predict_dataset(model, ds)
    metrics = classification_metrics(labels, probs, classes)
    multi = dataset_for(listing, views=config.eval_views, **common)
    labels, probs = predict_views(model, multi, config.eval_crops)
    full = classification_metrics(labels, probs, classes)
    metrics["single_view"] = {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"]}
    metrics["multi_view"] = {"accuracy": full["accuracy"], "macro_f1": full["macro_f1"],
                             "temporal_clips": config.eval_views, "spatial_crops": config.eval_crops,
                             "confusion_matrix": full["confusion_matrix"]}
    metrics["split"] = "validation" if data is None else os.path.abspath(data)
    metrics["skipped_files"] = len(listing.skipped) + len(failures.paths)
    save_json(os.path.join(run_dir, "metrics.json"), metrics)
    plot_confusion(metrics, os.path.join(run_dir, "confusion_matrix.png"))
    history = os.path.join(run_dir, "history.csv")
    if os.path.isfile(history):
        plot_history(history, os.path.join(run_dir, "training_curves.png"))
    return metrics


def describe(metrics):
    """The lines `train` and `evaluate` print."""
    if "judge" in metrics:
        from sora_tf.train.generative import summary_lines
        return summary_lines(metrics)
    return f"validation accuracy {metrics['accuracy']:.4f}  macro-F1 {metrics['macro_f1']:.4f}"
