"""What every task's fit shares: the job it is handed, checkpoints, logs and resuming."""
import dataclasses
import os
from typing import Any, Callable

import keras

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
    train_ds: Any  # tf.data of dict elements (see sora_tf.data.pipeline)
    val_ds: Any
    steps: int  # optimizer steps per epoch
    resuming: bool
    verbose: int
    train: Callable  # sora_tf.train.run.train, for tasks that train companion runs


class RunCheckpoint(keras.callbacks.Callback):
    """Each epoch: `last.keras` (trainer with optimizer state, for --resume) and `state.json`;
    `best.keras` (the bare model, for evaluate/predict/export) when the monitored metric improves.
    """

    def __init__(self, run_dir, core, monitor="val_accuracy", best=None, save_trainer=True):
        super().__init__()
        self.run_dir, self.core, self.monitor = run_dir, core, monitor
        self.best = best
        self.save_trainer = save_trainer  # False: the model trains itself; last.keras is core

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        value = logs.get(self.monitor)
        improved = value is not None and (self.best is None or value > self.best)
        if improved:
            self.best = float(value)
            atomic_write(os.path.join(self.run_dir, "best.keras"), self.core.save)
        atomic_write(os.path.join(self.run_dir, "last.keras"),
                     self.model.save if self.save_trainer else self.core.save)
        save_json(os.path.join(self.run_dir, "state.json"),
                  {"epoch": epoch, "best": self.best, "monitor": self.monitor,
                   "best_epoch": epoch if improved else self._best_epoch()})

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


def resume(out):
    """(model from last.keras, first epoch to run, best monitored value so far) of run `out`."""
    state = load_json(os.path.join(out, "state.json"))
    return load_checkpoint(os.path.join(out, "last.keras")), state["epoch"] + 1, state["best"]


def log_callbacks(out, resuming):
    """history.csv (appended to on resume) and TensorBoard under the run."""
    return [keras.callbacks.CSVLogger(os.path.join(out, "history.csv"), append=resuming),
            keras.callbacks.TensorBoard(os.path.join(out, "tb"), write_graph=False)]
