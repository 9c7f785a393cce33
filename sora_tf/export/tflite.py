"""TFLite for LiteRT: clip models in float32, float16, dynamic-range, full int8 and int16x8
(int8 weights, int16 activations), and the streaming model in float32, int8 and int16x8, all
builtins only (no Flex ops).

What works with Keras 3 RNNs here (measured): a dynamic batch fails conversion
("TensorListReserve element_shape static") and full int8 of the RNN's WHILE loop crashes the
converter, so every file has batch 1 and an RNN unrolled over the fixed T. The graphs take
float32 pixels in [0, 255] at the model's H x W (resize on the device, as the app sees fit);
normalisation is inside. Each file carries its labels and input spec as associated files in a
zip appended to the flatbuffer, the TFLite metadata convention, readable with
`zipfile.ZipFile(path).read("labels.txt")`; interpreters ignore the trailing bytes.
"""
import dataclasses
import json
import os
import zipfile

import numpy as np
import tensorflow as tf
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

from sora_tf.models import sora_cls
from sora_tf.train.checkpoint import atomic_write

CLIP_VARIANTS = ("float32", "float16", "dynamic", "int8", "int16x8")
STREAM_VARIANTS = ("float32", "int8", "int16x8")


def unrolled_copy(model):
    """The same clip model with its RNN unrolled over T (fixed-size graph, no WHILE loop)."""
    copy = sora_cls.build(dataclasses.replace(model.config, unroll=True))
    copy.set_weights(model.get_weights())
    return copy


def clip_function(model):
    config = model.config
    spec = tf.TensorSpec([1, config.num_frames, config.image_size, config.image_size, 3],
                         tf.float32, name="frames")

    @tf.function(input_signature=[{"frames": spec}])
    def serve(inputs):
        out = model(inputs["frames"], training=False)
        return {"probabilities": out["probabilities"], "embedding": out["embedding"]}
    return serve


def stream_function(stream, config):
    s = config.image_size
    specs = {"frame": tf.TensorSpec([1, s, s, 3], tf.float32, name="frame")}
    specs.update({k: tf.TensorSpec([1, *v], tf.float32, name=k)
                  for k, v in sora_cls.stream_state_shapes(config).items()})

    @tf.function(input_signature=[specs])
    def step(inputs):
        return stream(inputs, training=False)
    return step


def frozen_with_names(fn):
    """`fn` (a tf.function of one dict of named tensors, returning a dict) with its weights
    frozen into constants, keeping the input and output names.

    Converted as it is, Keras 3 weights stay resource variables (VAR_HANDLE/READ_VARIABLE ops,
    which int8 calibration cannot run); frozen plainly, the outputs lose their names.
    """
    concrete = fn.get_concrete_function()
    frozen = convert_variables_to_constants_v2(concrete)
    (specs,), _ = concrete.structured_input_signature
    out_keys = sorted(concrete.structured_outputs)  # flat order of a dict is by key

    @tf.function(input_signature=[specs])
    def named(inputs):
        return dict(zip(out_keys, frozen(*[inputs[k] for k in sorted(specs)])))
    return named.get_concrete_function()


def convert(fn, trackable, variant, representative=None):
    """Flatbuffer bytes of tf.function `fn` in `variant`; int8 needs `representative` (a
    callable yielding dicts of input arrays by name)."""
    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen_with_names(fn)], trackable)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if variant == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif variant == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif variant in ("int8", "int16x8"):
        if representative is None:
            raise ValueError(f"{variant} needs a representative dataset")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        # int16x8: integer-only too, int8 weights with int16 activations. Full int8 loses ~2
        # points here, accumulated through the unrolled LSTM steps; int16 activations do not.
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.TFLITE_BUILTINS_INT8 if variant == "int8"
            else tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    elif variant != "float32":
        raise ValueError(f"unknown TFLite variant {variant!r}")
    return compact_tensor_names(converter.convert())


def _read_model(flatbuffer):
    from tensorflow.lite.python import schema_py_generated as schema

    return schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(bytearray(flatbuffer), 0))


def compact_tensor_names(flatbuffer):
    """The model with every intermediate tensor renamed `t<index>`; inputs, outputs and the
    signatures keep their names.

    Tensor names are debug strings, unused by interpreters, and the converter builds them by
    joining the names of the ops it fused with ';': in the unrolled int8 clip model they came to
    28.7 KB, 5% of the file (one split of the 16 frames carried a 438-byte name per output).
    Done for every variant alike, so that file sizes compare weights and graphs.
    """
    from tensorflow.lite.tools import flatbuffer_utils

    model = _read_model(flatbuffer)
    for graph in model.subgraphs:
        keep = set(graph.inputs.tolist()) | set(graph.outputs.tolist())
        for i, tensor in enumerate(graph.tensors):
            if i not in keep:
                tensor.name = f"t{i}".encode()
    return flatbuffer_utils.convert_object_to_bytearray(model)


def write_with_labels(path, flatbuffer, classes, spec):
    """Write the model atomically, with labels.txt and sora_tf.json appended as a zip."""
    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(flatbuffer)
        with zipfile.ZipFile(tmp, "a") as z:
            z.writestr("labels.txt", "\n".join(classes) + "\n")
            z.writestr("sora_tf.json", json.dumps(spec, indent=2))
    atomic_write(path, write)
    return path


def read_labels(path):
    """(classes, spec) stored in a .tflite written by `write_with_labels`."""
    try:
        with zipfile.ZipFile(path) as z:
            classes = z.read("labels.txt").decode().split()
            spec = json.loads(z.read("sora_tf.json"))
    except (zipfile.BadZipFile, KeyError) as e:
        raise ValueError(f"{path}: no sora_tf labels in this .tflite ({e})") from None
    return classes, spec


def flex_ops(path):
    """Names of Flex (SELECT_TF_OPS) custom ops in a .tflite; empty means builtins only."""
    with open(path, "rb") as f:
        model = _read_model(f.read())
    names = [(op.customCode or b"").decode() for op in model.operatorCodes]
    return [n for n in names if n.startswith("Flex")]


def export_tflite(model, classes, out_dir, calibration, variants=CLIP_VARIANTS,
                  stream_variants=STREAM_VARIANTS, info=None):
    """Write `<variant>.tflite` and `stream_<variant>.tflite` to `out_dir`; returns {name: path}.

    `calibration`: float32 clips [N, T, H, W, 3] from the training data, for int8.
    """
    config = model.config
    unrolled = unrolled_copy(model)
    os.makedirs(out_dir, exist_ok=True)
    spec = {"num_frames": config.num_frames, "image_size": config.image_size,
            "pixel_range": [0, 255], "layout": "RGB", **(info or {})}
    clips = np.asarray(calibration, np.float32)

    def clip_representative():
        for clip in clips:
            yield {"frames": clip[None]}

    paths = {}
    serve = clip_function(unrolled)
    for variant in variants:
        flat = convert(serve, unrolled, variant, clip_representative)
        paths[variant] = write_with_labels(os.path.join(out_dir, f"{variant}.tflite"), flat, classes,
                                           {**spec, "kind": "clip", "variant": variant})

    stream = sora_cls.stream_model(model, batch=1)
    step = stream_function(stream, config)

    def stream_representative():
        for clip in clips:
            state = sora_cls.init_states(config)
            for frame in clip:
                yield {"frame": frame[None], **state}
                out = stream({"frame": frame[None], **state}, training=False)
                state = {k: np.asarray(out[k]) for k in state}

    for variant in stream_variants:
        flat = convert(step, stream, variant, stream_representative)
        paths[f"stream_{variant}"] = write_with_labels(
            os.path.join(out_dir, f"stream_{variant}.tflite"), flat, classes,
            {**spec, "kind": "stream", "variant": variant, "states": {
                k: [1, *v] for k, v in sora_cls.stream_state_shapes(config).items()}})
    return paths
