"""Export of a detector (the detect task): SavedModel signatures, streaming TFLite files, and their
parity with Keras (detections and AP50 on the run's test frames).

SavedModel signatures (batch first):
- `serving_default`: `frames` uint8 [batch, T, H, W, 3] RGB, any T, H, W: the frames are fed in
  order through the streaming model from the zero state. Outputs `boxes` float32
  [batch, T, K, 4] (x1, y1, x2, y2 in the input's pixels), `scores` [batch, T, K] best first,
  `classes` int64 [batch, T, K] (0: person) and `count` int32 [batch, T], the boxes at or above
  the run's score_threshold; K is the fixed `max_detections`.
- `stream`: one `frame` uint8 [batch, H, W, 3] and the `state_*` tensors (zeros to start, shapes
  in assets.extra/sora_tf.json) -> the same outputs for that frame and the new `state_*`.
Resizing (area) and normalisation happen inside.
TFLite: `stream_float32.tflite` and `stream_int8.tflite`, `frame` float32 [1, h, w, 3] in
[0, 255] at the model's size and the state tensors -> boxes in the model's pixels, scores, state.
The int8 file runs the frame CNN and the GRU in int8, and the head (the stride-4 maps) and the
decoding of boxes in float: all in int8, test AP50 fell 14 points, with the decoding in float
5.6, with the head in float too 0.5 (docs/sora_det.md).
"""
import os

import numpy as np
import tensorflow as tf

from sora_tf.atomic import save_json
from sora_tf.data.mot import FrameSet, frame_indices, load_sequence
from sora_tf.detection import ap_metrics, native_gt, stream_detections
from sora_tf.export import parity, saved_model, tflite
from sora_tf.progress import bar
from sora_tf.runs import load_json

STREAM_VARIANTS = ("float32", "int8")
FLOAT_SCOPES = ("head", "decode_boxes")  # kept in float by int8: the head (stride-4 maps) and decoding


def export_inputs(run_dir, config, classes, info, calibration_frames, parity_frames=None):
    """(test frames for parity, training frames for int8 calibration) of the run's sequence."""
    sequence = load_sequence(info["data"], config.size)
    split = load_json(os.path.join(run_dir, "split.json"), needs=("train", "val", "test"))
    check = frame_indices(split["test"] or split["val"])[:parity_frames]
    train = frame_indices(split["train"])
    return FrameSet(sequence, check), FrameSet(sequence, train[:calibration_frames])


def _resize(frames, size):
    """uint8 [N, H, W, 3] -> float32 [N, h, w, 3] pixels at the model's size, rounded as the
    training frames were; and the (x, y) factor from model pixels back to the input's."""
    shape = tf.shape(frames)
    resized = tf.round(tf.image.resize(tf.cast(frames, tf.float32), size, method="area", antialias=True))
    back = tf.cast(tf.stack([shape[2], shape[1]]), tf.float32) / tf.constant([size[1], size[0]], tf.float32)
    return resized, tf.tile(back, [2])


def serving_functions(model, config):
    """{signature name: (fn, input_signature)} of a detector."""
    stream = model.stream()
    shapes = model.stream_state_shapes()
    keys = sorted(shapes)
    k = config.max_detections

    def outputs(boxes, scores):
        return {"boxes": boxes, "scores": scores, "classes": tf.zeros(tf.shape(scores), tf.int64),
                "count": tf.reduce_sum(tf.cast(scores >= config.score_threshold, tf.int32), axis=-1)}

    def serving_default(frames):
        frames = saved_model.checked(frames, 5, {0: None, 1: None, 2: None, 3: None, 4: 3},
                                     "frames must be uint8 [batch >= 1, frames >= 1, height, width, 3 (RGB)]")
        shape = tf.shape(frames)
        resized, back = _resize(tf.reshape(frames, tf.concat([[-1], shape[2:]], 0)), config.size)
        resized = tf.transpose(tf.reshape(resized, [shape[0], shape[1], *config.size, 3]), [1, 0, 2, 3, 4])
        start = ({key: tf.zeros(tf.concat([[shape[0]], shapes[key]], 0)) for key in keys},
                 tf.zeros([shape[0], k, 4]), tf.zeros([shape[0], k]))

        def step(carry, frame):
            out = stream({"frame": frame, **carry[0]}, training=False)
            return {key: out[key] for key in keys}, out["boxes"], out["scores"]
        _, boxes, scores = tf.scan(step, resized, initializer=start)
        boxes = tf.transpose(boxes, [1, 0, 2, 3]) * back
        return outputs(boxes, tf.transpose(scores, [1, 0, 2]))

    def stream_signature(frame, **state):
        frame = saved_model.checked(frame, 4, {0: None, 1: None, 2: None, 3: 3},
                                    "frame must be uint8 [batch >= 1, height, width, 3 (RGB)]")
        resized, back = _resize(frame, config.size)
        out = stream({"frame": resized, **state}, training=False)
        return {**outputs(out["boxes"] * back, out["scores"]), **{key: out[key] for key in keys}}

    frames = tf.TensorSpec([None, None, None, None, 3], tf.uint8, name="frames")
    state_specs = [tf.TensorSpec([None, *shapes[key]], tf.float32, name=key) for key in keys]

    def stream_fn(frame, *states):
        return stream_signature(frame, **dict(zip(keys, states)))
    return {"serving_default": (serving_default, [frames]),
            "stream": (stream_fn, [tf.TensorSpec([None, None, None, 3], tf.uint8, name="frame"), *state_specs])}


def stream_function(stream, config, shapes):
    h, w = config.size
    specs = {"frame": tf.TensorSpec([1, h, w, 3], tf.float32, name="frame")}
    specs.update({key: tf.TensorSpec([1, *v], tf.float32, name=key) for key, v in shapes.items()})

    @tf.function(input_signature=[specs])
    def step(inputs):
        return stream(inputs, training=False)
    return step


def tflite_stream(path, frames, threads=None):
    """[(boxes, scores)] of `frames` (at the model's size) through a streaming .tflite in LiteRT
    (model pixels), from the zero state."""
    from sora_tf.export.detector import TFLiteDetector

    detector = TFLiteDetector(path, threads)
    return [detector.step_resized(frame) for frame in frames]


def _spec(model):
    config = model.config
    return {"image_height": config.image_height, "image_width": config.image_width, "pixel_range": [0, 255],
            "layout": "RGB", "max_detections": config.max_detections, "score_threshold": config.score_threshold,
            "states": {k: [1, *v] for k, v in model.stream_state_shapes().items()}}


def export_tflite(model, classes, out_dir, calibration, variants=STREAM_VARIANTS, info=None):
    """Write `stream_<variant>.tflite` to `out_dir`; returns {name: path}. `calibration`: uint8
    frames [N, h, w, 3] in order (a stretch of the training frames), for int8."""
    config = model.config
    stream = model.stream(batch=1)
    shapes = model.stream_state_shapes()
    step = stream_function(stream, config, shapes)
    spec = {**_spec(model), "boxes": "x1, y1, x2, y2 in the model's pixels", **(info or {})}

    def representative():
        state = model.init_states()
        for frame in calibration.astype(np.float32):
            yield {"frame": frame[None], **state}
            out = stream({"frame": frame[None], **state}, training=False)
            state = {key: np.asarray(out[key]) for key in state}
    paths = {}
    for variant in variants:
        flat = (tflite.int8_keeping_float(step, stream, representative, FLOAT_SCOPES) if variant == "int8"
                else tflite.convert(step, stream, variant, representative))
        paths[f"stream_{variant}"] = tflite.write_with_labels(
            os.path.join(out_dir, f"stream_{variant}.tflite"), flat, classes,
            {**spec, "kind": "detect_stream", "variant": variant})
    return paths


def _entry(name, found, reference, frameset):
    scale = frameset.sequence.box_scale
    got = np.stack([np.c_[b, s[:, None]] for b, s in found])
    want = np.stack([np.c_[b, s[:, None]] for b, s in reference])
    ap = ap_metrics(native_gt(frameset.sequence, frameset.indices), [(b / scale, s) for b, s in found])
    # The largest difference over the frames' boxes and scores (per coordinate; a box's rank may
    # change where two scores tie, so this is an upper bound on what moved).
    return parity.entry(name, got, want, ap50=ap["ap50"], ap=ap["ap"])


def export(model, classes, root, name, val, calib, info, variants=None):
    """SavedModel `root/name/<version>/` and streaming TFLite files in `root/name/tflite/<version>/`
    with parity.json; `val` / `calib`: `FrameSet`s (parity on the run's test frames; int8
    calibration on training frames). Returns {"saved_model", "tflite", "parity"}."""
    config = model.config
    frames = val.frames
    reference = stream_detections(model, frames)
    entries = [_entry("keras", reference, reference, val)]
    with saved_model.publishing(root, name) as staged:
        saved_model.write_saved_model(model, config, classes, staged.saved_model, name,
                                      serving_functions(model, config), info, spec=_spec(model))
        serving = tf.saved_model.load(staged.saved_model).signatures["serving_default"]
        out = serving(frames=tf.constant(frames[None]))
        entries.append(_entry("saved_model", list(zip(out["boxes"][0].numpy(), out["scores"][0].numpy())),
                              reference, val))
        paths = export_tflite(model, classes, staged.tflite, calib.frames,
                              [v for v in STREAM_VARIANTS if variants is None or v in variants],
                              info={**info, "version": staged.version})
        for key, file in bar(paths.items(), "parity of TFLite files", unit="file"):
            entry = _entry(f"tflite_{key}", tflite_stream(file, frames), reference, val)
            entries.append({**entry, "file_bytes": os.path.getsize(file)})
        save_json(os.path.join(staged.tflite, "parity.json"), entries)
    return {"saved_model": staged.final_saved_model,
            "tflite": {k: os.path.join(staged.final_tflite, os.path.basename(p)) for k, p in paths.items()},
            "parity": entries}
