"""`evaluate` and `predict` on a trained run."""
import logging
import os

import numpy as np

from sora_tf.data.pipeline import DecodeFailures, make_dataset, sample_indices
from sora_tf.data.sources import list_clips
from sora_tf.data.video import count_frames, read_frames
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


def evaluate(run_dir, data=None, strict=False):
    """Write metrics.json and plots for the run's validation split (or all clips of `data`)."""
    model, config, classes, info = load_run(run_dir)
    source = data or info["data"]
    listing = list_clips(source, strict=strict)
    if listing.classes != classes:
        raise ValueError(f"{source}: classes {listing.classes} differ from the run's {classes}")
    if data is None:
        wanted = set(load_json(os.path.join(run_dir, "split.json"))["val_paths"])
        listing = listing.subset([i for i, p in enumerate(listing.paths) if p in wanted])
    failures = DecodeFailures()
    ds = make_dataset(listing.paths, listing.labels, listing.counts, clip_len=config.num_frames,
                      size=(config.image_size,) * 2, training=False, batch_size=config.batch_size,
                      failures=failures)
    labels, probs, _ = predict_dataset(model, ds)
    metrics = classification_metrics(labels, probs, classes)
    metrics["split"] = "validation" if data is None else os.path.abspath(data)
    metrics["skipped_files"] = len(listing.skipped) + len(failures.paths)
    save_json(os.path.join(run_dir, "metrics.json"), metrics)
    plot_confusion(metrics, os.path.join(run_dir, "confusion_matrix.png"))
    history = os.path.join(run_dir, "history.csv")
    if os.path.isfile(history):
        plot_history(history, os.path.join(run_dir, "training_curves.png"))
    return metrics


def predict(run_dir, videos, top_k=3):
    """[(video, [(class, probability), ...] or error string)] for each video path."""
    model, config, classes, _ = load_run(run_dir)
    results = []
    for video in videos:
        try:
            indices, _ = sample_indices(count_frames(video), config.num_frames, training=False)
            clip = read_frames(video, indices.numpy(), (config.image_size,) * 2)
        except (ValueError, OSError) as e:
            results.append((video, str(e)))
            continue
        probs = np.asarray(model(clip[None], training=False)["probabilities"])[0]
        order = np.argsort(-probs)[:top_k]
        results.append((video, [(classes[i], float(probs[i])) for i in order]))
    return results
