"""TFLite for LiteRT: clip models in float32, float16, dynamic-range, full int8, mixed int8 and
int16x8 (int8 weights, int16 activations), and the streaming model in float32, int8, mixed int8
and int16x8, all builtins only (no Flex ops).

What works with Keras 3 RNNs here (measured): a dynamic batch fails conversion
("TensorListReserve element_shape static") and full int8 of the RNN's WHILE loop crashes the
converter, so every file has batch 1 and an RNN unrolled over the fixed T. The graphs take
float32 pixels in [0, 255] at the model's H x W (resize on the device, as the app sees fit);
normalisation is inside. Each file carries its labels and input spec as associated files in a
zip appended to the flatbuffer, the TFLite metadata convention, readable with
`zipfile.ZipFile(path).read("labels.txt")`; interpreters ignore the trailing bytes.

`int8_mixed`: the frame CNN in full int8, as in `int8`; the recurrent cell and the head in
float32 arithmetic on int8 weights (dynamic-range). Full int8 gives every tensor one calibrated
scale, and the unrolled clip file has a tensor per time step where the stream has one for all
steps, so their recurrent states round differently. In float the two files compute the same
cell from the same int8 frame features.
"""
import dataclasses
import json
import os
import zipfile

import numpy as np
import tensorflow as tf
from tensorflow.lite.python import schema_py_generated as schema
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

from sora_tf.models import sora_cls
from sora_tf.train.checkpoint import atomic_write

CLIP_VARIANTS = ("float32", "float16", "dynamic", "int8", "int8_mixed", "int16x8")
STREAM_VARIANTS = ("float32", "int8", "int8_mixed", "int16x8")


def unrolled_copy(model, implementation=2):
    """The same clip model with its RNN unrolled over T (fixed-size graph, no WHILE loop).

    `implementation=1` computes each gate with its own matmul instead of one matmul and a split:
    the same numbers, but `int8_mixed` needs it (the quantiser keeps a split's output in int8
    even when asked not to), and the int8 stream tracks Keras more closely with it (top-1 0.991
    against 0.980 on 560 validation clips). The unrolled full int8 clip file keeps the fused form:
    per-gate matmuls put T copies of per-step constants in it (626 KB against 521 KB).
    """
    copy = sora_cls.build(dataclasses.replace(model.config, unroll=True))
    copy.set_weights(model.get_weights())
    for i in range(model.config.rnn_layers):
        copy.get_layer(f"rnn{i}").cell.implementation = implementation
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
    if variant == "int8_mixed":
        return compact_tensor_names(convert_mixed(converter, representative))
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


def convert_mixed(converter, representative):
    """Full int8 up to the frame features; the recurrent cell and the head in float32 on int8
    weights. Calibrates once, then quantises with everything downstream of the frame features
    (and of recurrent state inputs) left float, as `tf.lite.experimental.QuantizationDebugger`
    does with `denylisted_nodes` (its internals, pinned with TF 2.21 in setup.cfg), and finally
    stores those float layers' weights in int8, per output channel."""
    from tensorflow.lite.python import convert as lite_convert

    if representative is None:
        raise ValueError("int8_mixed needs a representative dataset")
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
    converter.experimental_mlir_quantizer = True
    converter._experimental_calibrate_only = True
    calibrated = converter.convert()
    quantized = lite_convert.mlir_quantize(calibrated, disable_per_channel=False, fully_quantize=False,
                                           enable_numeric_verify=False,
                                           denylisted_nodes=_recurrent_part(calibrated))
    return dynamic_range_weights(quantized)


def _builtin(model, op):
    code = model.operatorCodes[op.opcodeIndex]
    return max(code.builtinCode, code.deprecatedBuiltinCode)


def frame_feature_tensor(model):
    """Index of the per-frame feature tensor in a flatbuffer's main graph: the output of the
    FULLY_CONNECTED that reads the flattened last convolution."""
    ops = schema.BuiltinOperator
    graph = model.subgraphs[0]
    producer = {int(t): op for op in graph.operators for t in op.outputs}

    def made_by(tensor, kind):
        op = producer.get(int(tensor))
        return op is not None and _builtin(model, op) == kind

    found = [int(op.outputs[0]) for op in graph.operators if _builtin(model, op) == ops.FULLY_CONNECTED
             and made_by(op.inputs[0], ops.RESHAPE)
             and made_by(producer[int(op.inputs[0])].inputs[0], ops.CONV_2D)]
    if len(found) != 1:
        raise ValueError(f"expected one frame-feature layer (a dense layer on the flattened last "
                         f"convolution), found {len(found)}")
    return found[0]


def _recurrent_part(flatbuffer):
    """Output names of every op downstream of the frame features or of a recurrent state input."""
    model = _read_model(flatbuffer)
    graph = model.subgraphs[0]
    reached = {frame_feature_tensor(model)} | {
        int(i) for i in graph.inputs if any(k in graph.tensors[int(i)].name.decode() for k in ("state_h", "state_c"))}
    names = []
    for op in graph.operators:  # in execution order
        if any(int(t) in reached for t in op.inputs if t >= 0):
            reached.update(int(t) for t in op.outputs)
            names.extend(graph.tensors[int(t)].name.decode() for t in op.outputs)
    return names


def dynamic_range_weights(flatbuffer):
    """The model with the constant float32 weights of its float FULLY_CONNECTED ops stored as
    symmetric int8 per output channel: LiteRT's hybrid kernels (the `dynamic` variant's)."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = _read_model(flatbuffer)
    graph = model.subgraphs[0]
    float32, int8 = schema.TensorType.FLOAT32, schema.TensorType.INT8
    done = {}  # buffer index -> quantisation, for tensors that share a buffer
    for op in graph.operators:
        if _builtin(model, op) != schema.BuiltinOperator.FULLY_CONNECTED:
            continue
        x, w = graph.tensors[int(op.inputs[0])], graph.tensors[int(op.inputs[1])]
        data = model.buffers[w.buffer].data
        if x.type != float32 or w.type != float32 or (data is None and w.buffer not in done):
            continue
        if w.buffer not in done:
            weights = np.frombuffer(bytes(bytearray(data)), np.float32).reshape(w.shape)
            peak = np.abs(weights).max(axis=1)
            scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
            q = np.clip(np.round(weights / scale[:, None]), -127, 127).astype(np.int8)
            model.buffers[w.buffer].data = np.frombuffer(q.tobytes(), np.uint8)
            done[w.buffer] = schema.QuantizationParametersT()
            done[w.buffer].scale, done[w.buffer].zeroPoint = scale.tolist(), [0] * len(scale)
            done[w.buffer].quantizedDimension = 0
        w.type, w.quantization = int8, done[w.buffer]
        op.builtinOptions.asymmetricQuantizeInputs = True
    return flatbuffer_utils.convert_object_to_bytearray(model)


def _read_model(flatbuffer):
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
    unrolled, per_gate = unrolled_copy(model), unrolled_copy(model, implementation=1)
    os.makedirs(out_dir, exist_ok=True)
    spec = {"num_frames": config.num_frames, "image_size": config.image_size,
            "pixel_range": [0, 255], "layout": "RGB", **(info or {})}
    clips = np.asarray(calibration, np.float32)

    def clip_representative():
        for clip in clips:
            yield {"frames": clip[None]}

    paths = {}
    for variant in variants:
        clip_model = per_gate if variant == "int8_mixed" else unrolled
        flat = convert(clip_function(clip_model), clip_model, variant, clip_representative)
        paths[variant] = write_with_labels(os.path.join(out_dir, f"{variant}.tflite"), flat, classes,
                                           {**spec, "kind": "clip", "variant": variant})

    stream = sora_cls.stream_model(per_gate, batch=1)
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
