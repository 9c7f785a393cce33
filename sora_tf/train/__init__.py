"""Training: `run.train` is the generic entry; `<task>.py` holds what one task's models share."""
import importlib

from sora_tf import models


def task(model_name):
    """The training code of model `model_name`'s task: sora_tf/train/<task>.py, which exposes
    `default_data(preset)` (the generated data a run without --data trains on),
    `prepare(config, data, out, resuming, first_epoch, strict)` (a `fitting.Prepared`: datasets
    and split), `trainer(model, config, steps_per_epoch)`, `fit(job)`, `evaluate(run_dir, data,
    strict)` and `describe(metrics)`."""
    return importlib.import_module(f"sora_tf.train.{models.get(model_name).task}")
