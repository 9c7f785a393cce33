"""`evaluate` on a trained run: its task writes metrics.json and plots."""
import os

from sora_tf import train as tasks
from sora_tf.runs import load_json


def _task(run_dir):
    if not os.path.isdir(run_dir):
        raise FileNotFoundError(f"{run_dir}: no such run folder")
    return tasks.task(load_json(os.path.join(run_dir, "run.json"), needs=("model",))["model"])


def evaluate(run_dir, data=None, strict=False):
    """metrics.json and plots for the run's validation split (or all clips of `data`)."""
    return _task(run_dir).evaluate(run_dir, data, strict)


def describe(run_dir, metrics):
    """The lines `train` and `evaluate` print for the run's metrics."""
    return _task(run_dir).describe(metrics)
