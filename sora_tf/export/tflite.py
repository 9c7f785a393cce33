"""TFLite for LiteRT, builtins only: conversion of named tf.functions to float32, float16,
dynamic-range, full int8 and int16x8 (int8 weights, int16 activations), full int8 of a streaming
step and its WHILE loop with one set of ranges (`int8_pair`), and the labels and input spec
carried inside each file.

Keras 3 RNNs (measured): a dynamic batch fails conversion ("TensorListReserve element_shape
static") and calibrating a WHILE loop for int8 crashes the converter, so files have batch 1, and
the loop of an int8 clip file takes its ranges from the calibrated stream (docs/export.md).
Labels and spec are associated files in a zip appended to the flatbuffer, the TFLite metadata
convention, readable with `zipfile.ZipFile(path).read("labels.txt")`; interpreters ignore the
trailing bytes.
"""
import contextlib
import json
import zipfile

import tensorflow as tf
from tensorflow.lite.python import schema_py_generated as schema
from tensorflow.lite.tools import flatbuffer_utils
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

from sora_tf.atomic import atomic_write


@contextlib.contextmanager
def _plain_silu():
    """Trace with silu as x * sigmoid(x): the same function, without the custom gradient whose
    IdentityN ops make the converter drop a frozen function's signature (EfficientNet's swish)."""
    silu = tf.nn.silu
    tf.nn.silu = lambda x, beta=1.0: x * tf.sigmoid(beta * x)
    try:
        yield
    finally:
        tf.nn.silu = silu


def frozen_with_names(fn):
    """`fn` (a tf.function of one dict of named tensors, returning a dict) with its weights
    frozen into constants, keeping the input and output names.

    Converted as it is, Keras 3 weights stay resource variables (VAR_HANDLE/READ_VARIABLE ops,
    which int8 calibration cannot run); frozen plainly, the outputs lose their names.
    """
    with _plain_silu():
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
        # int16x8: integer-only too, int8 weights with int16 activations. Full int8 of the
        # unrolled classifier of the zoo lost 1 to 2 points, accumulated through the LSTM steps
        # (its int8 file is now `int8_pair`'s loop); int16 activations did not.
        # An op that 16x8 has no kernel for (DIV, in the stream's mean over time) runs in float
        # between a dequantize and a quantize, as TensorFlow's 16x8 guide does it.
        converter.target_spec.supported_ops = (
            [tf.lite.OpsSet.TFLITE_BUILTINS_INT8] if variant == "int8"
            else [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8,
                  tf.lite.OpsSet.TFLITE_BUILTINS])
    elif variant != "float32":
        raise ValueError(f"unknown TFLite variant {variant!r}")
    return compact_tensor_names(converter.convert())


def _calibrated(fn, trackable, representative):
    """The float model of `fn` with the min/max of every activation over `representative`."""
    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen_with_names(fn)], trackable)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter._experimental_calibrate_only = True
    return converter.convert()


def int8_keeping_float(fn, trackable, representative, float_scopes):
    """Full int8 of tf.function `fn`, but for the ops whose names contain one of `float_scopes`, which run
    in float32 between a dequantize and a quantize (calibration, then `mlir_quantize` with those
    nodes denylisted, as `tf.lite.experimental.QuantizationDebugger` does for selective
    quantisation; TF 2.21 internals, pinned in setup.cfg)."""
    from tensorflow.lite.python import convert as lite_convert

    calibrated = _calibrated(fn, trackable, representative)
    graph = _read_model(calibrated).subgraphs[0]
    nodes = [graph.tensors[int(op.outputs[0])].name.decode() for op in graph.operators]
    kept = [n for n in nodes if any(scope in n for scope in float_scopes)]
    if not kept:
        raise ValueError(f"no op named with any of {float_scopes} to keep in float")
    return compact_tensor_names(lite_convert.mlir_quantize(
        bytes(calibrated), disable_per_channel=False, fully_quantize=False, enable_numeric_verify=False,
        denylisted_nodes=kept))


def int8_pair(step, loop, trackable, representative):
    """{"stream": bytes, "clip": bytes}: full int8 files of the streaming `step` and of `loop`
    (`loop_function` of the same stream), quantised with one set of ranges, calibrated on the
    stream. Uses what `tf.lite.experimental.QuantizationDebugger` uses (a calibrate-only
    conversion, then `mlir_quantize`), TF 2.21 internals, pinned in setup.cfg."""
    from tensorflow.lite.python import convert as lite_convert

    calibrated = _calibrated(step, trackable, representative)
    floats = tf.lite.TFLiteConverter.from_concrete_functions([frozen_with_names(loop)], trackable).convert()

    def quantize(model):
        return compact_tensor_names(lite_convert.mlir_quantize(
            bytes(model), disable_per_channel=False, fully_quantize=False, enable_numeric_verify=False))
    return {"stream": quantize(calibrated), "clip": quantize(with_stream_ranges(floats, calibrated))}


def _stats(tensor):
    q = tensor.quantization
    return (list(q.min), list(q.max)) if q is not None and q.min is not None and len(q.min) else None


def _set_stats(tensor, stats):
    q = schema.QuantizationParametersT()
    q.min, q.max = stats
    tensor.quantization = q


def _op_name(graph, op):
    """An op's name as the converter leaves it: its first output's, each ';'-joined part stripped
    of the while-loop prefix (`while/body/_1/while/`), so a loop body's ops read as the step's."""
    name = graph.tensors[int(op.outputs[0])].name.decode()
    return ";".join(part.rsplit("while/", 1)[-1] for part in name.split(";"))


def with_stream_ranges(loop_flatbuffer, calibrated_stream):
    """The float loop model with the calibrated stream's min/max on every activation of the loop
    body: by op name for the step's own tensors, and, for the loop-carried state and the frame
    taken from the clip, by the stream input that the same op reads."""
    stream = _read_model(calibrated_stream)
    sgraph = stream.subgraphs[0]
    by_name = {_op_name(sgraph, op): [_stats(sgraph.tensors[int(t)]) for t in op.outputs] for op in sgraph.operators}
    signature = stream.signatureDefs[0]
    input_of = {int(m.tensorIndex): m.name.decode() for m in signature.inputs}
    input_stats = {key: _stats(sgraph.tensors[t]) for t, key in input_of.items()}
    output_stats = {m.name.decode(): _stats(sgraph.tensors[int(m.tensorIndex)]) for m in signature.outputs}
    readers = [(_op_name(sgraph, op), position, input_of[int(t)]) for op in sgraph.operators
               for position, t in enumerate(op.inputs) if int(t) in input_of]

    model = _read_model(loop_flatbuffer)
    main = model.subgraphs[0]
    [loop] = [op for op in main.operators if _builtin(model, op) == schema.BuiltinOperator.WHILE]
    body = model.subgraphs[loop.builtinOptions.bodySubgraphIndex]
    ops = {_op_name(body, op): op for op in body.operators}
    for op in body.operators:
        for tensor, stats in zip(op.outputs, by_name.get(_op_name(body, op), [])):
            if stats:
                _set_stats(body.tensors[int(tensor)], stats)
    carried = [int(t) for t in body.inputs]
    for name, position, key in readers:
        if name not in ops:
            raise ValueError(f"the loop body has no op {name!r} of the streaming step")
        tensor = int(ops[name].inputs[position])
        _set_stats(body.tensors[tensor], input_stats[key])
        if tensor in carried and output_stats.get(key):  # the state the step hands to the next one
            _set_stats(body.tensors[int(body.outputs[carried.index(tensor)])], output_stats[key])
    loop_outputs = [int(t) for t in loop.outputs]
    for m in model.signatureDefs[0].outputs:  # probabilities, embedding: the last step's
        _set_stats(body.tensors[int(body.outputs[loop_outputs.index(int(m.tensorIndex))])],
                   output_stats[m.name.decode()])
    used = {int(t) for op in body.operators for t in list(op.inputs) + list(op.outputs) if t >= 0}
    missing = [body.tensors[i].name.decode() for i in sorted(used)
               if body.tensors[i].type == schema.TensorType.FLOAT32 and len(body.tensors[i].shape) < 5  # not the clip
               and model.buffers[body.tensors[i].buffer].data is None and _stats(body.tensors[i]) is None]
    if missing:
        raise ValueError(f"no stream range for loop tensors {missing[:5]} ({len(missing)} in all)")
    return flatbuffer_utils.convert_object_to_bytearray(model)


def _builtin(model, op):
    code = model.operatorCodes[op.opcodeIndex]
    return max(code.builtinCode, code.deprecatedBuiltinCode)


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
    model = _read_model(flatbuffer)
    for graph in model.subgraphs:
        keep = set(graph.inputs.tolist()) | set(graph.outputs.tolist())
        for i, tensor in enumerate(graph.tensors):
            if i not in keep:
                tensor.name = f"t{i}".encode()
    return flatbuffer_utils.convert_object_to_bytearray(model)


def write_with_labels(path, flatbuffer, classes, spec):
    """Write the model atomically, with labels.txt and sora_tf.json appended as a zip; a model
    with Flex ops is an error instead (every file is to run on LiteRT's builtins alone)."""
    flex = _flex_names(_read_model(flatbuffer))
    if flex:
        raise RuntimeError(f"{path}: Flex ops {flex}; expected builtins only")

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
        return _flex_names(_read_model(f.read()))


def _flex_names(model):
    names = [(op.customCode or b"").decode() for op in model.operatorCodes]
    return [n for n in names if n.startswith("Flex")]
