"""Atomic artifacts: write beside the target, then rename over it.

A run killed mid-save leaves the previous good file in place, never a half-written one.
"""
import json
import os
import tempfile

import keras


def atomic_write(path, write):
    """Call write(tmp_path) for a temp file in the target's folder, then rename it to `path`."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.basename(path), dir=folder)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_json(path, value):
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(value, f, indent=2)
    atomic_write(path, write)


def load_json(path):
    with open(path) as f:
        return json.load(f)


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
