"""What every task's fit shares: the job it is handed, checkpoints, logs and resuming."""
import csv
import dataclasses
import os
from typing import Any, Callable

import keras
import numpy as np
from keras import ops

from sora_tf.atomic import atomic_write, save_json
from sora_tf.runs import load_checkpoint, load_json


@dataclasses.dataclass
class Job:
    """A run as `train` hands it to a task's `fit`: everything about it but the model."""

    module: Any  # the model's module (Config, build, task)
    model_name: str
    config: Any
    out: str  # the run folder
    data: str
    preset: Any
    strict: bool
    train_ds: Any  # endless tf.data of dict batches, from the epoch the run starts at
    val_ds: Any  # every validation clip once
    steps: int  # optimizer steps per epoch: batches of train_ds that make one
    train_labels: list  # the training clips' class indices
    resuming: bool
    verbose: int
    train: Callable  # sora_tf.train.run.train, for tasks that train companion runs
    backup: str = None  # multi-worker: where BackupAndRestore keeps this worker's state


@dataclasses.dataclass
class Prepared:
    """What a task's `prepare` hands back to `run.train`."""

    config: object  # the config, completed from the data (number of classes, ...)
    classes: list
    train_ds: object
    val_ds: object
    steps: int
    train_labels: list
    report: object  # () -> data_report.json's content, once training has read the data


@keras.saving.register_keras_serializable("sora_tf")
class AdamWarmEMA(keras.optimizers.AdamW):
    """AdamW whose weight average (`use_ema`) warms up: after n steps its momentum is
    min(ema_momentum, (1 + n) / (3 + n)), so that it spans about the last half of the steps so
    far, up to 1 / (1 - ema_momentum) steps (the form of `num_updates` in TensorFlow's
    `tf.train.ExponentialMovingAverage`). Keras's own average uses ema_momentum from the second
    step, which on short runs kept weights still largely the initial ones (measured: docs/)."""

    def _update_model_variables_moving_average(self, trainable_variables):
        if not self.use_ema:
            return
        n = ops.cast(self.iterations, "float32")
        momentum = ops.where(n > 0, ops.minimum(self.ema_momentum, (1.0 + n) / (3.0 + n)), 0.0)
        for var, average in zip(trainable_variables, self._model_variables_moving_average):
            if average is not None:
                m = ops.cast(momentum, var.dtype)
                average.assign(m * average + (1.0 - m) * var)


def warm_ema_optimizer(config, steps_per_epoch, **kwargs):
    """`AdamWarmEMA` over a cosine decay of `config.learning_rate` to 5% across all epochs, with
    `config.weight_decay` and the weight average of `config.ema_momentum` (0: none)."""
    schedule = keras.optimizers.schedules.CosineDecay(
        config.learning_rate, decay_steps=max(1, config.epochs * steps_per_epoch), alpha=0.05)
    return AdamWarmEMA(schedule, weight_decay=config.weight_decay, use_ema=config.ema_momentum > 0,
                       ema_momentum=config.ema_momentum, **kwargs)


class RunCheckpoint(keras.callbacks.Callback):
    """Each epoch: `last.keras` (trainer with optimizer state, for --resume) and `state.json`;
    `best.keras` (the bare model, for evaluate/predict/export) when the monitored metric improves
    (`monitor="last"`: every epoch, so that best.keras is the end of the schedule).

    With a weight average (`average`, the run's `SwapEMAWeights`, which puts the averaged weights
    in the model at each epoch's end), best.keras holds the average, and last.keras the raw
    weights with the average in the optimizer's slot: where training stands, to resume from.
    """

    def __init__(self, run_dir, core, monitor="val_accuracy", best=None, save_trainer=True, average=None):
        super().__init__()
        self.run_dir, self.core, self.monitor = run_dir, core, monitor
        self.best = best
        self.save_trainer = save_trainer  # False: the model trains itself; last.keras is core
        self.average = average

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        value = epoch if self.monitor == "last" else logs.get(self.monitor)
        improved = value is not None and (self.best is None or (
            value < self.best if minimised(self.monitor) else value > self.best))
        if improved:
            self.best = float(value)
            atomic_write(os.path.join(self.run_dir, "best.keras"), self.core.save)
        swapped = self.average is not None and self.average._ema_weights_in_model
        if swapped:
            self.average._swap_variables()  # the raw weights back in the model, the average in its slot
        try:
            atomic_write(os.path.join(self.run_dir, "last.keras"),
                         self.model.save if self.save_trainer else self.core.save)
        finally:
            if swapped:
                self.average._swap_variables()
        save_json(os.path.join(self.run_dir, "state.json"),
                  {"epoch": epoch, "best": self.best, "monitor": self.monitor,
                   "best_epoch": epoch if improved else self._best_epoch(),
                   "seed_states": [v.numpy().tolist() for v in seed_states(self.model)]})

    def _best_epoch(self):
        path = os.path.join(self.run_dir, "state.json")
        return load_json(path).get("best_epoch") if os.path.exists(path) else None


class SaveAfter(keras.callbacks.Callback):
    """Save the model (atomically) once `epochs` epochs are done."""

    def __init__(self, epochs, path):
        super().__init__()
        self.epochs, self.path = epochs, path

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.epochs:
            atomic_write(self.path, self.model.save)


def seed_states(model):
    """The state variables of `model`'s random seed generators (augmentation, dropout, noise),
    in a fixed order. A .keras file does not keep them, so state.json does: a resumed run goes
    on drawing the numbers the uninterrupted run would have drawn."""
    weights = {id(w) for w in model.weights}
    return [v for v in model.variables if id(v) not in weights]


def resume(out):
    """(model from last.keras with its random seeds' states, first epoch to run, best monitored
    value so far, epochs since the best) of run `out`; history.csv keeps the epochs done."""
    state = load_json(os.path.join(out, "state.json"), needs=("epoch", "best"))
    model = load_checkpoint(os.path.join(out, "last.keras"))
    saved = state.get("seed_states")
    if saved is not None:  # (a run saved before they were kept starts its seeds again)
        found = seed_states(model)
        if len(found) != len(saved):
            raise ValueError(f"{out}/state.json: {len(saved)} random seed states, the model has {len(found)}")
        for variable, value in zip(found, saved):
            variable.assign(np.asarray(value, variable.dtype))
    _keep_history(os.path.join(out, "history.csv"), state["epoch"])
    best_epoch = state.get("best_epoch")
    waited = state["epoch"] - best_epoch if best_epoch is not None else 0
    return model, state["epoch"] + 1, state["best"], waited


def _keep_history(path, last_epoch):
    """Drop rows of epochs after `last_epoch` (logged before a kill, before their checkpoint)."""
    if not os.path.isfile(path):
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    kept = rows[:1] + [r for r in rows[1:] if r and int(r[0]) <= last_epoch]
    if kept != rows:
        def write(tmp):
            with open(tmp, "w", newline="") as f:
                csv.writer(f).writerows(kept)
        atomic_write(path, write)


def minimised(monitor):
    """Losses are minimised; every other monitored metric (accuracy, AP, PSNR) is maximised."""
    return monitor.endswith("loss")


class EarlyStop(keras.callbacks.EarlyStopping):
    """EarlyStopping that, in a resumed run, goes on counting from the best value so far and the
    epochs since it, as the uninterrupted run would."""

    def __init__(self, monitor, patience, best=None, waited=0):
        super().__init__(monitor, patience=patience, mode="min" if minimised(monitor) else "max")
        self.resumed = (best, waited)

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        best, waited = self.resumed
        if best is not None:
            self.best, self.wait = best, waited


def log_callbacks(out, resuming, backup=None):
    """history.csv (appended to on resume) and TensorBoard under the run; with `backup` (a
    multi-worker run, `distribute.py`), the workers' moving statistics averaged each epoch and a
    keras.callbacks.BackupAndRestore there."""
    restoring = bool(backup) and os.path.isdir(backup)  # a restarted worker: history goes on
    callbacks = [keras.callbacks.CSVLogger(os.path.join(out, "history.csv"), append=resuming or restoring),
                 keras.callbacks.TensorBoard(os.path.join(out, "tb"), write_graph=False)]
    if not backup:
        return callbacks
    from sora_tf.train.distribute import moving_statistics_sync
    return [moving_statistics_sync()] + callbacks + [keras.callbacks.BackupAndRestore(backup)]
