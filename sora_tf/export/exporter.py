"""Turn a trained run into deployable artifacts, each checked against the Keras model.

`export/<model>/<version>/` is the SavedModel for TF Serving; `export/<model>/tflite/<version>/`
holds the TFLite files of the same version (TF Serving ignores folders that are not integers)
and `parity.json`: per artifact, how far its outputs are from Keras's on the run's validation
clips (see `sora_tf.export.parity`). What is exported is the model's task's choice
(sora_tf/export/<task>.py).
"""
import os

from sora_tf import export as tasks
from sora_tf.runs import load_run


def export_run(run_dir, root="export", calibration_clips=64, parity_clips=None, variants=None):
    """Export `run_dir`; returns {"saved_model": path, "tflite": {name: path}, "parity": [...],
    "models_config": path}. `variants`: the TFLite variants to write (default all)."""
    model, config, classes, info = load_run(run_dir)
    task = tasks.task(info["model"])
    val, calib = task.export_inputs(run_dir, config, classes, info, calibration_clips, parity_clips)
    result = task.export(model, classes, root, info["model"], val, calib, {"run": os.path.abspath(run_dir)}, variants)
    return {**result, "models_config": os.path.join(root, "models.config")}
