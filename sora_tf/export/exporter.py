"""Turn a trained run into deployable artifacts, each checked against the Keras model.

`export/<model>/<version>/` is the SavedModel for TF Serving; `export/<model>/tflite/<version>/`
holds the TFLite files of the same version (TF Serving ignores folders that are not integers)
and `parity.json`: per artifact, how far its outputs are from Keras's on the run's validation
clips (its test clips where the validation clips trained; see `sora_tf.export.parity`). What is exported is the model's task's choice
(sora_tf/export/<task>.py).
"""
import os

from sora_tf import export as tasks
from sora_tf.runs import load_run


def in_float32(model, model_name):
    """`model`, or, when it computes in 16 bits (trained with `mixed_precision`), the same
    weights in a float32 build of it: exports are float32, and TFLite quantises from there."""
    import dataclasses

    from sora_tf import models
    from sora_tf.models.precision import computing

    if all(layer.dtype_policy.name == "float32" for layer in model._flatten_layers()):
        return model
    config = dataclasses.replace(model.config, mixed_precision=False)
    with computing(config):  # float32
        copy = models.get(model_name).build(config)
    copy.set_weights(model.get_weights())
    return copy


def export_run(run_dir, root="export", calibration_clips=None, parity_clips=None, variants=None):
    """Export `run_dir`; returns {"saved_model": path, "tflite": {name: path}, "parity": [...],
    "models_config": path}. `variants`: the TFLite variants to write (default all);
    `calibration_clips`: default the task's `CALIBRATION`, else 64."""
    model, config, classes, info = load_run(run_dir)
    model = in_float32(model, info["model"])
    task = tasks.task(info["model"])
    if calibration_clips is None:
        calibration_clips = getattr(task, "CALIBRATION", 64)
    val, calib = task.export_inputs(run_dir, config, classes, info, calibration_clips, parity_clips)
    result = task.export(model, classes, root, info["model"], val, calib, {"run": os.path.abspath(run_dir)}, variants)
    return {**result, "models_config": os.path.join(root, "models.config")}
