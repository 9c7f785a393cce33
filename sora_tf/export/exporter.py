"""Turn a trained run into deployable artifacts, and check each against the Keras model.

`export/<model>/<version>/` is the SavedModel for TF Serving; `export/<model>/tflite/<version>/`
holds the TFLite files of the same version (TF Serving ignores folders that are not integers).
`parity.json` beside the TFLite files records, per artifact, top-1 agreement with Keras, the
largest probability difference and accuracy on the run's validation clips.
"""
import os

import numpy as np
import tensorflow as tf

from sora_tf import models
from sora_tf.atomic import atomic_dir
from sora_tf.export import generative, saved_model, tflite
from sora_tf.export.runtime import load_predictor
from sora_tf.train.checkpoint import save_json
from sora_tf.train.evaluate import load_clips, source_listing, split_part
from sora_tf.train.run import load_run


def _agreement(name, probs, reference, labels):
    return {"artifact": name, "num_clips": int(len(labels)),
            "top1_agreement": float(np.mean(probs.argmax(1) == reference.argmax(1))),
            "max_prob_diff": float(np.abs(probs - reference).max()),
            "accuracy": float(np.mean(probs.argmax(1) == labels))}


def export_run(run_dir, root="export", calibration_clips=64, parity_clips=None, tflite_variants=None):
    """Export `run_dir`; returns {"saved_model": path, "tflite": {variant: path}, "parity": [...]}."""
    model, config, classes, info = load_run(run_dir)
    name = info["model"]
    source = {"run": os.path.abspath(run_dir)}
    listing = source_listing(classes, info)  # probed once for both parts
    val_clips, val_labels = load_clips(split_part(run_dir, listing, "val", info["data"]), config, parity_clips)
    calib, calib_labels = load_clips(split_part(run_dir, listing, "train", info["data"]), config, calibration_clips)
    if getattr(models.get(name), "TASK", "classify") == "generate":
        return generative.export_generative(model, config, classes, run_dir, root, name,
                                            (val_clips, val_labels), (calib, calib_labels))
    reference = np.asarray(model.predict(val_clips, batch_size=16, verbose=0)["probabilities"])
    parity = [_agreement("keras", reference, reference, val_labels)]

    path = saved_model.export_saved_model(model, config, classes, root, name, source)
    version = os.path.basename(path)
    serving = tf.saved_model.load(path).signatures["serving_default"]
    probs = np.concatenate([serving(frames=tf.constant(val_clips[i:i + 16]))["probabilities"].numpy()
                            for i in range(0, len(val_clips), 16)])
    parity.append(_agreement("saved_model", probs, reference, val_labels))

    final = os.path.join(root, name, "tflite", version)
    with atomic_dir(final) as tmp:
        variants = tflite_variants or tflite.CLIP_VARIANTS
        paths = tflite.export_tflite(model, classes, tmp, calib.astype(np.float32), variants=variants,
                                     info={**source, "version": int(version)})
        outputs = {}
        for key, file in paths.items():
            if tflite.flex_ops(file):
                raise RuntimeError(f"{file}: Flex ops {tflite.flex_ops(file)}; expected builtins only")
            runner = load_predictor(file)  # a clip model, or a streaming one fed frame by frame
            outputs[key] = probs = np.stack([runner.predict(c) for c in val_clips])
            entry = _agreement(f"tflite_{key}", probs, reference, val_labels)
            entry["file_bytes"] = os.path.getsize(file)
            clip_twin = outputs.get(key.removeprefix("stream_")) if key.startswith("stream_") else None
            if clip_twin is not None:  # the clip file of the same quantisation
                entry["top1_agreement_with_clip_file"] = float(np.mean(probs.argmax(1) == clip_twin.argmax(1)))
            parity.append(entry)
        save_json(os.path.join(tmp, "parity.json"), parity)
    return {"saved_model": path, "tflite": {k: os.path.join(final, os.path.basename(p)) for k, p in paths.items()},
            "parity": parity, "models_config": os.path.join(root, "models.config")}


def parity_table(parity):
    if parity and "top1_agreement" not in parity[0]:
        return generative.parity_table(parity)
    lines = [f"{'artifact':24} {'clips':>5} {'top1 agree':>10} {'max |dp|':>9} {'accuracy':>8} {'bytes':>9}"
             f" {'top1 agree with clip file':>25}"]
    for p in parity:
        twin = p.get("top1_agreement_with_clip_file")
        lines.append(f"{p['artifact']:24} {p['num_clips']:5d} {p['top1_agreement']:10.4f} "
                     f"{p['max_prob_diff']:9.2e} {p['accuracy']:8.4f} {p.get('file_bytes', ''):>9}"
                     f" {'' if twin is None else f'{twin:.4f}':>25}")
    return "\n".join(lines)
