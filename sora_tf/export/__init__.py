"""Export: `exporter.export_run` is the generic entry; `<task>.py` holds what one task's models
export (SavedModel signatures, TFLite files, their parity checks)."""
import importlib

from sora_tf import models


def task(model_name):
    """The export code of model `model_name`'s task: sora_tf/export/<task>.py, which exposes
    `export_inputs(run_dir, config, classes, info, calibration, parity)` (the run's data that
    calibrates int8 and checks parity: `(val, calib)`) and
    `export(model, classes, root, name, val, calib, info, variants=None)`; optional: `CALIBRATION`,
    how many calibration clips (or frames) `export` takes by default (64 without it)."""
    return importlib.import_module(f"sora_tf.export.{models.get(model_name).task}")
