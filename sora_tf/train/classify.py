"""The classification task: fitting with in-graph augmentation and a warmed-up weight average,
and evaluation (single- and multi-view accuracy, macro-F1, confusion matrix, plots).

Shared by every model whose call returns {"probabilities", "embedding"} from uint8 clips.
"""
import csv
import io
import logging
import os

import keras
import numpy as np
import tensorflow as tf

from sora_tf.atomic import save_json, save_text
from sora_tf.data.augment import ClipAugment
from sora_tf.data.pipeline import DecodeFailures, dataset_for, supervised
from sora_tf.data.sampling import crop_views
from sora_tf.progress import bar
from sora_tf.runs import load_run, source_listing, split_part
from sora_tf.train.clips import default_data, prepare  # noqa: F401 (this task's data: labelled clips)
from sora_tf.train.fitting import EarlyStop, RunCheckpoint, log_callbacks, resume, warm_ema_optimizer
from sora_tf.train.metrics import classification_metrics, plot_confusion, plot_history

log = logging.getLogger("sora_tf.train")

# `cv` (sora_tf/train/cv.py) can deal this task's labelled clips into grouped folds and read
# each fold run's test accuracy from its metrics.json.
cross_validation = True


def augmenter(config):
    return ClipAugment(
        zoom=config.aug_zoom, translate=config.aug_translate, rotation_deg=config.aug_rotation_deg,
        flip=config.aug_flip, brightness=config.aug_brightness, contrast=config.aug_contrast,
        saturation=config.aug_saturation, hue=config.aug_hue, noise_std=config.aug_noise_std,
        warp_fraction=config.aug_warp_fraction, seed=config.seed, name="augment")


def trainer_for(core, config):
    """uint8 clips -> augmentation (training only) -> core model -> probabilities. Under
    `jit_compile` the augmentation runs in the input pipeline instead (`training_data`): XLA has
    no kernel for its image warp (ImageProjectiveTransformV3)."""
    shape = (config.num_frames, config.image_size, config.image_size, 3)
    if config.jit_compile:
        frames = keras.Input(shape, dtype="float32", name="frames")
        return keras.Model(frames, core(frames)["probabilities"], name="trainer")
    frames = keras.Input(shape, dtype="uint8", name="frames")
    probabilities = core(augmenter(config)(frames))["probabilities"]
    return keras.Model(frames, probabilities, name="trainer")


def soft_labels(config):
    """Whether the loss takes class distributions (label smoothing) instead of indices."""
    return getattr(config, "label_smoothing", 0.0) > 0


def training_data(ds, config):
    """(clips, labels) to fit on: augmented here under `jit_compile` (see `trainer_for`)."""
    ds = labelled(ds, config)
    if not config.jit_compile:
        return ds
    augment = augmenter(config)
    return ds.map(lambda x, y: (augment(x, training=True), y))


def labelled(ds, config):
    """(clips, labels): class indices, or one-hot rows when the loss takes distributions."""
    ds = supervised(ds)
    if not soft_labels(config):
        return ds
    return ds.map(lambda x, y: (x, tf.one_hot(y, config.num_classes)))


@keras.saving.register_keras_serializable("sora_tf")
class MacroAUC(keras.metrics.AUC):
    """ROC AUC of each class's probability against the other classes, averaged over classes
    (`val_auc` in history.csv): how well the model ranks clips, whatever its threshold. Labels
    are class indices or class distributions."""

    def __init__(self, num_classes, name="auc", **kwargs):
        for key in ("multi_label", "num_labels"):  # in a saved config; both follow from num_classes
            kwargs.pop(key, None)
        super().__init__(name=name, num_thresholds=kwargs.pop("num_thresholds", 500), multi_label=True,
                         num_labels=num_classes, **kwargs)
        self.num_classes = num_classes

    def update_state(self, y_true, y_pred, sample_weight=None):
        if len(y_true.shape) == len(y_pred.shape) and y_true.shape[-1] == self.num_classes:
            y_true = keras.ops.argmax(y_true, axis=-1)  # (smoothed) one-hot
        y_true = keras.ops.one_hot(keras.ops.reshape(keras.ops.cast(y_true, "int32"), (-1,)), self.num_classes)
        if sample_weight is not None:  # one weight per clip, for every class column
            sample_weight = keras.ops.reshape(sample_weight, (-1, 1)) * keras.ops.ones_like(y_pred)
        return super().update_state(y_true, y_pred, sample_weight)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}


def compile_trainer(trainer, config, steps_per_epoch):
    if soft_labels(config):
        loss = keras.losses.CategoricalCrossentropy(label_smoothing=getattr(config, "label_smoothing", 0.0))
        metric = keras.metrics.CategoricalAccuracy(name="accuracy")
    else:
        loss, metric = keras.losses.SparseCategoricalCrossentropy(), "accuracy"
    trainer.compile(optimizer=warm_ema_optimizer(config, steps_per_epoch), loss=loss,
                    metrics=[metric, MacroAUC(config.num_classes)], jit_compile=config.jit_compile)


def trainer(model, config, steps_per_epoch):
    """The compiled model that `fit` steps on (uint8 clips, int labels): the augmenting trainer."""
    wrapped = trainer_for(model, config)
    compile_trainer(wrapped, config, steps_per_epoch)
    return wrapped


def _fits(ours, theirs):
    """Their weight fits ours: the same shape, or a conv kernel with fewer input channels."""
    return ours.shape == theirs.shape or (ours.ndim == 4 and ours.shape[:2] == theirs.shape[:2]
                                          and ours.shape[3] == theirs.shape[3] and ours.shape[2] > theirs.shape[2])


def init_frame_cnn(core, run_dir):
    """Copy the frame CNN stages of another run's encoder (a model with an `encoder` whose
    `frame_features` layer wraps a frame CNN, as a generative run's does) into `core`'s frame
    CNN where layer names and weight shapes match, or where our kernel has more input channels
    (the normal flow after the frame and its difference: those keep their initial weights);
    returns the names of the layers copied."""
    source = load_run(run_dir)[0]
    if not hasattr(source, "encoder"):
        raise ValueError(f"init_frame_cnn={run_dir}: not a run with an encoder")
    source = source.encoder.get_layer("frame_features").layer
    target = core.get_layer("frame_features").layer
    copied = []
    for layer in source.layers:
        names = [l.name for l in target.layers]
        if layer.weights and layer.name in names:
            twin = target.get_layer(layer.name)
            ours, theirs = twin.get_weights(), layer.get_weights()
            if len(ours) == len(theirs) and all(map(_fits, ours, theirs)):
                for a, b in zip(ours, theirs):
                    a[tuple(slice(0, n) for n in b.shape)] = b  # a wider kernel keeps its other input channels
                twin.set_weights(ours)
                copied.append(layer.name)
    if not copied:
        raise ValueError(f"init_frame_cnn={run_dir}: no frame CNN layer matches in name and shape")
    return copied


def fit(job):
    """fit() an augmenting trainer around the model; best.keras is the bare model at the best value
    of `config.monitor` (resolved from "auto" by `prepare`)."""
    config = job.config
    if job.resuming:
        wrapped, initial_epoch, best, waited = resume(job.out)
        core = wrapped.get_layer(job.model_name)
    else:
        core = job.module.build(config)
        if getattr(config, "init_frame_cnn", ""):
            copied = init_frame_cnn(core, config.init_frame_cnn)
            log.info("frame CNN layers %s initialised from %s", ", ".join(copied), config.init_frame_cnn)
        wrapped = trainer(core, config, job.steps)
        initial_epoch, best, waited = 0, None, 0
    # As compiled: a run resumed from before `ema_momentum` has no average. The averaged weights
    # are in the model from the end of each epoch (for validation and best.keras) to the start
    # of the next; training steps, and last.keras, use the raw ones.
    average = keras.callbacks.SwapEMAWeights(swap_on_epoch=True) if wrapped.optimizer.use_ema else None
    weights = class_weights(config, job.train_labels)
    if weights:
        log.info("class weights (class_weight=%s): %s", config.class_weight,
                 ", ".join(f"{k} {w:.2f}" for k, w in weights.items()))
    callbacks = [*log_callbacks(job.out, job.resuming, job.backup),
                 RunCheckpoint(job.out, core, monitor=config.monitor, best=best, average=average)]
    if config.monitor != "last":
        callbacks.append(EarlyStop(config.monitor, config.patience, best, waited))
    if average is not None:
        callbacks.insert(0, average)
    if initial_epoch < config.epochs:
        validation = labelled(job.val_ds, config) if job.val_ds is not None else None  # None: train_on_val
        wrapped.fit(training_data(job.train_ds, config), steps_per_epoch=job.steps, validation_data=validation,
                    epochs=config.epochs, initial_epoch=initial_epoch, callbacks=callbacks, verbose=job.verbose,
                    class_weight=weights)


def predict_dataset(model, ds):
    """(labels, probabilities, paths) over a dataset, in its (deterministic) order."""
    labels, probs, paths = [], [], []
    for batch in bar(ds, "evaluating", unit="batch"):
        probs.append(np.asarray(model(batch["frames"], training=False)["probabilities"]))
        labels.append(batch["label"].numpy())
        paths.extend(p.decode() for p in batch["path"].numpy())
    return np.concatenate(labels), np.concatenate(probs), paths


def predict_views(model, ds, crops):
    """(labels, probabilities) with softmax averaged over every temporal clip x spatial crop."""
    labels, probs = [], []
    for batch in bar(ds, "evaluating views", unit="batch"):
        frames = crop_views(batch["frames"], crops)  # [B, V, T, H, W, 3]
        b, v = frames.shape[:2]
        out = model(tf.reshape(frames, (b * v, *frames.shape[2:])), training=False)["probabilities"]
        probs.append(np.asarray(out).reshape(b, v, -1).mean(1))
        labels.append(batch["label"].numpy())
    return np.concatenate(labels), np.concatenate(probs)


def class_weights(config, labels):
    """{class index: weight} for the loss, from the training clips' `labels`, or None.
    `balanced`: each class weighs n / (k n_c), so every class counts alike; `auto`: balanced
    when the largest class has more than 1.5 times the clips of the smallest; `none`: off."""
    counts = np.bincount(np.asarray(labels, int), minlength=config.num_classes)
    present = counts[counts > 0]
    if config.class_weight == "none" or (config.class_weight == "auto" and present.max() <= 1.5 * present.min()):
        return None
    return {k: float(counts.sum() / (len(present) * c)) if c else 0.0 for k, c in enumerate(counts)}


def _measure(model, config, listing, classes, failures, predictions=None):
    """Classification metrics of `listing`'s clips: single view, and multi-view beside it; each
    clip's single-view prediction goes to the CSV file `predictions` when given."""
    common = dict(clip_len=config.num_frames, size=(config.image_size,) * 2, training=False,
                  batch_size=config.batch_size, strides=listing.strides(config.fps), failures=failures)
    labels, probs, paths = predict_dataset(model, dataset_for(listing, **common))
    metrics = classification_metrics(labels, probs, classes)
    if predictions:
        save_predictions(predictions, paths, labels, probs, classes)
    labels, probs = predict_views(model, dataset_for(listing, views=config.eval_views, **common), config.eval_crops)
    full = classification_metrics(labels, probs, classes)
    metrics["single_view"] = {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"]}
    metrics["multi_view"] = {"accuracy": full["accuracy"], "macro_f1": full["macro_f1"],
                             "temporal_clips": config.eval_views, "spatial_crops": config.eval_crops,
                             "confusion_matrix": full["confusion_matrix"]}
    return metrics


def save_predictions(path, paths, labels, probs, classes):
    """One row a clip: path, true and predicted class, and each class's probability."""
    rows = io.StringIO()
    writer = csv.writer(rows)
    writer.writerow(["path", "label", "predicted", *(f"p_{c}" for c in classes)])
    for clip, label, p in zip(paths, labels, probs):
        writer.writerow([clip, classes[label], classes[int(np.argmax(p))], *(f"{v:.6f}" for v in p)])
    save_text(path, rows.getvalue())


def evaluate(run_dir, data=None, strict=False):
    """Write metrics.json and plots: the run's validation clips (which picked its checkpoint) and,
    beside them under `test`, its held-out test clips; the test clips alone for a run that
    trained on its validation clips (train_on_val); or, with `data`, all clips of `data`."""
    model, config, classes, info = load_run(run_dir)
    listing = source_listing(classes, info, data, strict)
    failures = DecodeFailures()
    if data is not None:
        metrics = {**_measure(model, config, listing, classes, failures), "split": os.path.abspath(data)}
    else:
        val = split_part(run_dir, listing, "val", info["data"])
        test = split_part(run_dir, listing, "test", info["data"])
        if val is None and test is None:
            raise ValueError(f"{run_dir}: the run holds out neither validation nor test clips")
        tested = None if test is None else _measure(model, config, test, classes, failures,
                                                    predictions=os.path.join(run_dir, "predictions_test.csv"))
        if val is None:
            metrics = {**tested, "split": "test"}
        else:
            metrics = {**_measure(model, config, val, classes, failures), "split": "validation"}
            if tested is not None:
                metrics["test"] = tested
                plot_confusion(tested, os.path.join(run_dir, "confusion_matrix_test.png"))
        weights = class_weights(config, split_part(run_dir, listing, "train", info["data"]).labels)
        metrics["class_weight"] = {"setting": config.class_weight,
                                   "weights": weights and {classes[k]: w for k, w in weights.items()}}
    metrics["skipped_files"] = len(listing.skipped) + len(failures.paths)
    save_json(os.path.join(run_dir, "metrics.json"), metrics)
    plot_confusion(metrics, os.path.join(run_dir, "confusion_matrix.png"))
    history = os.path.join(run_dir, "history.csv")
    if os.path.isfile(history):
        plot_history(history, os.path.join(run_dir, "training_curves.png"))
    return metrics


def describe(metrics):
    """The line `train` and `evaluate` print."""
    line = f"{metrics['split']} accuracy {metrics['accuracy']:.4f}  macro-F1 {metrics['macro_f1']:.4f}"
    if metrics["split"] == "test":
        line += f"  ({metrics['num_clips']} held-out clips; the validation clips trained)"
    if "test" in metrics:
        line += f"\ntest accuracy {metrics['test']['accuracy']:.4f}  macro-F1 {metrics['test']['macro_f1']:.4f}" \
                f"  ({metrics['test']['num_clips']} held-out clips)"
    return line
