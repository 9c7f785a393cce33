"""SavedModel for TF Serving: `export/<model>/<version>/`, versioned and published whole, with
the named signatures the model's task gives (sora_tf/export/<task>.py), the labels and a
`sora_tf.json` spec in `assets.extra/`, and `models.config` for `--model_config_file`. Also the
check of a REST body against a signature, as TF Serving would check it.
"""
import collections
import contextlib
import numbers
import os
import shutil

import keras
import numpy as np
import tensorflow as tf

from sora_tf.atomic import atomic_dir, save_json, save_text


def versions(model_dir):
    """The integer version folders under `model_dir`, as ints (none when it does not exist)."""
    return [int(n) for n in os.listdir(model_dir) if n.isdigit()] if os.path.isdir(model_dir) else []


def next_version(model_dir):
    """1 + the largest integer version under `model_dir`, of SavedModels or TFLite folders (1 when
    there is none)."""
    return max(versions(model_dir) + versions(os.path.join(model_dir, "tflite")), default=0) + 1


def newest(path):
    """`path` if it is a SavedModel, else its newest integer version folder, else None."""
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return path
    found = versions(path)
    return os.path.join(path, str(max(found))) if found else None


def checked(tensor, rank, sizes, what):
    """`tensor`, once it is checked to have `rank` axes and, at each axis i in `sizes`, `sizes[i]`
    elements (None: at least one): otherwise the call fails with `what`, the expected shape, and
    the shape it got. A signature's declared shape is not enforced when it is called."""
    shape = tf.shape(tensor)
    got = tf.strings.reduce_join(tf.strings.as_string(shape), separator=", ")
    message = tf.strings.join([f"{what}; got shape [", got, "]"])
    ok = tf.equal(tf.rank(tensor), rank)
    for axis, size in sizes.items():
        ok = tf.logical_and(ok, tf.cond(tf.equal(tf.rank(tensor), rank),
                                        lambda a=axis, n=size: shape[a] >= 1 if n is None else tf.equal(shape[a], n),
                                        lambda: False))
    with tf.control_dependencies([tf.debugging.Assert(ok, [message])]):
        return tf.identity(tensor)


def checked_frames(frames, num_frames, name="frames"):
    """uint8 clips [batch >= 1, T, height >= 1, width >= 1, 3], checked (see `checked`)."""
    return checked(frames, 5, {0: None, 1: num_frames, 2: None, 3: None, 4: 3},
                   f"{name} must be uint8 [batch >= 1, {num_frames} frames, height, width, 3 (RGB)]")


def sampling(config):
    """How the model's clips are sampled, for whoever feeds an export: as evaluation samples."""
    return {"num_frames": config.num_frames, "image_size": config.image_size, "fps": float(config.fps)}


def preprocess(frames, config):
    """uint8 [B, T, h, w, 3] -> float32 [B, T, S, S, 3] in [0, 255] at the model's size S, after
    checking the shape (`checked_frames`)."""
    s = config.image_size
    frames = checked_frames(frames, config.num_frames)
    shape = tf.shape(frames)
    flat = tf.reshape(frames, tf.concat([[-1], shape[2:]], 0))
    same = tf.reduce_all(tf.equal(shape[2:4], [s, s]))
    # Area resampling for any size; rounded to integers as the uint8 training frames were.
    resized = tf.cond(same, lambda: tf.cast(flat, tf.float32),
                      lambda: tf.round(tf.image.resize(flat, [s, s], method="area", antialias=True)))
    return tf.reshape(resized, [-1, config.num_frames, s, s, 3])


Staged = collections.namedtuple("Staged", "version saved_model tflite final_saved_model final_tflite")


@contextlib.contextmanager
def publishing(export_root, name):
    """Stage the next version N of model `name`: yields a `Staged` with N, the SavedModel and
    TFLite temp folders to write into, and where each will be published. When the block ends
    without error, the TFLite folder becomes `export_root/name/tflite/N`, then the SavedModel
    `export_root/name/N`: that rename publishes
    the version whole (TF Serving, `newest` and `published_tflite` look for it), and a kill at any
    point leaves no version N. A TFLite folder left without its SavedModel by a kill between
    the two renames is removed here, as `atomic_dir` removes killed runs' temp folders."""
    model_dir = os.path.join(export_root, name)
    tflite_dir = os.path.join(model_dir, "tflite")
    os.makedirs(tflite_dir, exist_ok=True)
    for orphan in set(versions(tflite_dir)) - set(versions(model_dir)):
        shutil.rmtree(os.path.join(tflite_dir, str(orphan)), ignore_errors=True)
    version = next_version(model_dir)
    final_saved, final_tflite = os.path.join(model_dir, str(version)), os.path.join(tflite_dir, str(version))
    with atomic_dir(final_saved, replace=False) as saved, atomic_dir(final_tflite, replace=False) as tflite_files:
        yield Staged(version, saved, tflite_files, final_saved, final_tflite)
    write_models_config(export_root)


def published_tflite(model_dir):
    """The newest published version's TFLite folder of a model folder, or None."""
    found = versions(model_dir)
    return os.path.join(model_dir, "tflite", str(max(found))) if found else None


def write_saved_model(model, config, classes, path, name, functions, info=None, spec=None):
    """Write the SavedModel into the (empty, staged) folder `path`, with labels.txt and
    sora_tf.json in assets.extra. `functions`: {signature: (fn, input_signature)}, from the
    model's task (sora_tf/export/<task>.py); `spec`: what sora_tf.json says of the inputs
    (default: the clip sampling, `sampling(config)`)."""
    archive = keras.export.ExportArchive()
    archive.track(model)
    for sig, (fn, inputs) in functions.items():
        archive.add_endpoint(sig, fn, input_signature=inputs)
    archive.write_out(path, verbose=False)
    extra = os.path.join(path, "assets.extra")
    save_text(os.path.join(extra, "labels.txt"), "\n".join(classes) + "\n")
    save_json(os.path.join(extra, "sora_tf.json"), {
        "model": name, "classes": list(classes), **(sampling(config) if spec is None else spec), **(info or {})})


def write_models_config(export_root):
    """`models.config` for `tensorflow_model_server --model_config_file`, one entry per model
    folder under `export_root`, with base paths as mounted at /models in the Serving container."""
    names = sorted(n for n in os.listdir(export_root)
                   if os.path.isdir(os.path.join(export_root, n))
                   and any(v.isdigit() for v in os.listdir(os.path.join(export_root, n))))
    body = "".join(f"  config {{\n    name: '{n}'\n    base_path: '/models/{n}'\n"
                   f"    model_platform: 'tensorflow'\n  }}\n" for n in names)
    return save_text(os.path.join(export_root, "models.config"), "model_config_list {\n" + body + "}\n")


def signature_inputs(path, name="serving_default"):
    """{input name: (dtype enum name, shape with -1 for any)} of a SavedModel signature, the
    information `saved_model_cli show --dir PATH --signature_def NAME` prints."""
    _, specs = tf.saved_model.load(path).signatures[name].structured_input_signature
    return {k: (f"DT_{v.dtype.name.upper()}", [-1 if d is None else d for d in v.shape.as_list()])
            for k, v in specs.items()}


_DTYPES = {"DT_UINT8": ("uint8", 0, 255), "DT_STRING": ("string", None, None)}


def _all_ints(nested):
    """Whether every leaf of nested lists is a JSON integer (a float such as 1.0 is not)."""
    stack = [nested]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, bool) or not isinstance(item, numbers.Integral):
            return False
    return True


def check_rest_body(signature_inputs, body):
    """Check a TF Serving REST predict body against a signature's inputs.

    `signature_inputs`: {name: (dtype enum name, shape with -1 for any)}, as `saved_model_cli
    show` prints. `body`: {"instances": [...]} (row format: one input, or dicts by name) or
    {"inputs": ...}. Raises ValueError naming the first mismatch; returns the batch size.
    """
    if not isinstance(body, dict) or not ({"instances", "inputs"} & set(body)):
        raise ValueError('a predict body needs "instances" (row format) or "inputs" (columnar)')
    rows = body.get("instances", body.get("inputs"))
    if not isinstance(rows, list) or not rows:
        raise ValueError("instances must be a non-empty list")
    if len(signature_inputs) == 1 and not isinstance(rows[0], dict):
        (name,) = signature_inputs
        columns = {name: rows}
    else:
        columns = {n: [r.get(n) if isinstance(r, dict) else None for r in rows] for n in signature_inputs}
        extra = set().union(*(r.keys() for r in rows if isinstance(r, dict))) - set(signature_inputs)
        if extra:
            raise ValueError(f"unknown input name(s) {sorted(extra)}; the signature has {sorted(signature_inputs)}")
    for name, (dtype, shape) in signature_inputs.items():
        kind, lo, hi = _DTYPES.get(dtype, (dtype, None, None))
        try:
            value = np.asarray(columns[name], dtype=object if kind == "string" else np.float64)
        except (ValueError, TypeError) as e:
            raise ValueError(f"input {name!r}: not a rectangular {kind} array ({e})") from None
        if value.ndim != len(shape) or any(want not in (-1, got) for want, got in zip(shape, value.shape)):
            raise ValueError(f"input {name!r}: shape {list(value.shape)} does not fit {list(shape)}")
        if kind == "uint8" and (not _all_ints(columns[name]) or value.min() < lo or value.max() > hi):
            raise ValueError(f"input {name!r}: values must be integers in [{lo}, {hi}] for uint8 "
                             "(not floats: pixels in [0, 1] would be black frames)")
        if kind == "string" and not all(isinstance(v, (str, dict)) for v in value.ravel()):
            raise ValueError(f"input {name!r}: values must be strings (or {{\"b64\": ...}})")
    return len(rows)
