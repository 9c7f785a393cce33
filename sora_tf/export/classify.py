"""Export of a classifier (the classify task): SavedModel signatures, TFLite clip and streaming
files, and their parity with Keras.

SavedModel signatures (batch first, named inputs and outputs):
- `serving_default`: `frames` uint8 [batch, T, H, W, 3] RGB of any H x W. Resizing (area, as the
  training pipeline's OpenCV INTER_AREA) and normalisation happen inside. Outputs
  `probabilities`, `class_id` (int64), `class_name` (string) and `embedding`.
- `embed`: `frames` -> `embedding`.
- `serving_jpeg`: `frames_jpeg` string [batch, T] of JPEG-encoded frames, decoded in-graph.
  Encoded *video* bytes cannot be decoded in-graph: TensorFlow has no video decoder op, and
  tensorflow-io's FFmpeg ops do not load with TF 2.21.
TFLite: `<variant>.tflite` (`frames` float32 [1, T, S, S, 3] in [0, 255]) and
`stream_<variant>.tflite` (one `frame` [1, S, S, 3] and the `state_*` tensors per call).

A classifier gives `probabilities` and `embedding`, and its streaming form through
`model.unrolled(implementation)`, `.stream(batch)`, `.stream_state_shapes()` and `.init_states()`.
"""
import logging
import os

import numpy as np
import tensorflow as tf

from sora_tf.atomic import save_json
from sora_tf.export import parity, saved_model, tflite
from sora_tf.export.clips import export_inputs  # noqa: F401 (this task exports from the run's clips)
from sora_tf.export.runtime import load_predictor
from sora_tf.progress import bar

log = logging.getLogger("sora_tf.export")

CLIP_VARIANTS = ("float32", "float16", "dynamic", "int8", "int16x8")
STREAM_VARIANTS = ("float32", "int8", "int16x8")
# Training clips that calibrate int8. A 96 px default-data model: 64 clips kept 0.943 of its
# top-1 answers, 256 kept 0.979; at 64 px both kept 0.992 (docs/sora_cls.md).
CALIBRATION = 256


def serving_functions(model, config, classes):
    """{signature name: (fn, input_signature)} for a clip model."""
    t = config.num_frames
    names = tf.constant(classes)

    def classify(x):
        out = model(saved_model.preprocess(x, config), training=False)
        class_id = tf.argmax(out["probabilities"], axis=-1)
        return {"probabilities": out["probabilities"], "class_id": class_id,
                "class_name": tf.gather(names, class_id), "embedding": out["embedding"]}

    def serving_default(frames):
        return classify(frames)

    def embed(frames):
        return {"embedding": model(saved_model.preprocess(frames, config), training=False)["embedding"]}

    def serving_jpeg(frames_jpeg):
        frames_jpeg = saved_model.checked(frames_jpeg, 2, {0: None, 1: t},
                                          f"frames_jpeg must be strings [batch >= 1, {t}] of JPEG frames")
        flat = tf.reshape(frames_jpeg, [-1])
        decoded = tf.map_fn(lambda b: tf.io.decode_jpeg(b, channels=3), flat,
                            fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8))
        shape = tf.shape(decoded)
        return classify(tf.reshape(decoded, tf.concat([[-1, t], shape[1:]], 0)))

    frames = tf.TensorSpec([None, t, None, None, 3], tf.uint8, name="frames")
    return {"serving_default": (serving_default, [frames]),
            "embed": (embed, [frames]),
            "serving_jpeg": (serving_jpeg, [tf.TensorSpec([None, t], tf.string, name="frames_jpeg")])}


def clip_function(model):
    config = model.config
    spec = tf.TensorSpec([1, config.num_frames, config.image_size, config.image_size, 3],
                         tf.float32, name="frames")

    @tf.function(input_signature=[{"frames": spec}])
    def serve(inputs):
        out = model(inputs["frames"], training=False)
        return {"probabilities": out["probabilities"], "embedding": out["embedding"]}
    return serve


def stream_function(stream, config, shapes):
    s = config.image_size
    specs = {"frame": tf.TensorSpec([1, s, s, 3], tf.float32, name="frame")}
    specs.update({k: tf.TensorSpec([1, *v], tf.float32, name=k)
                  for k, v in shapes.items()})

    @tf.function(input_signature=[specs])
    def step(inputs):
        return stream(inputs, training=False)
    return step


def loop_function(stream, config, shapes):
    """The clip model as a WHILE loop over the streaming step: frames [1, T, H, W, 3] in, the
    last step's probabilities and embedding out."""
    t_frames, s = config.num_frames, config.image_size
    keys = sorted(shapes)

    @tf.function(input_signature=[{"frames": tf.TensorSpec([1, t_frames, s, s, 3], tf.float32, name="frames")}])
    def serve(inputs):
        frames = inputs["frames"]

        def step(t, probabilities, embedding, *states):
            out = stream({"frame": tf.gather(frames, t, axis=1), **dict(zip(keys, states))}, training=False)
            return (t + 1, out["probabilities"], out["embedding"], *[out[k] for k in keys])
        # The zero start state; the zero frame is computed from the input, as a constant it
        # would be stored in the file (48 KB at 64 px).
        start = [frames[:, 0] * 0.0 if tuple(shapes[k]) == (s, s, 3) else tf.zeros([1, *shapes[k]])
                 for k in keys]
        loop = tf.while_loop(lambda t, *_: t < t_frames, step,
                             (tf.constant(0), tf.zeros([1, config.num_classes]), tf.zeros([1, stream.output["embedding"].shape[-1]]), *start))
        return {"probabilities": loop[1], "embedding": loop[2]}
    return serve


def export_tflite(model, classes, out_dir, calibration, variants=CLIP_VARIANTS,
                  stream_variants=STREAM_VARIANTS, info=None):
    """Write `<variant>.tflite` and `stream_<variant>.tflite` to `out_dir`; returns {name: path}.

    `calibration`: float32 clips [N, T, H, W, 3] from the training data, for int8.
    """
    config = model.config
    unrolled = model.unrolled()
    os.makedirs(out_dir, exist_ok=True)
    spec = {**saved_model.sampling(config), "pixel_range": [0, 255], "layout": "RGB", **(info or {})}
    clips = np.asarray(calibration, np.float32)
    shapes = model.stream_state_shapes()
    stream = model.unrolled(implementation=1).stream(batch=1)
    step = stream_function(stream, config, shapes)

    def clip_representative():
        for clip in clips:
            yield {"frames": clip[None]}

    def stream_representative():
        for clip in clips:
            state = model.init_states()
            for frame in clip:
                yield {"frame": frame[None], **state}
                out = stream({"frame": frame[None], **state}, training=False)
                state = {k: np.asarray(out[k]) for k in state}

    int8 = (tflite.int8_pair(step, loop_function(stream, config, shapes), stream, stream_representative)
            if "int8" in variants or "int8" in stream_variants else None)
    paths = {}
    serve = clip_function(unrolled)
    for variant in variants:
        flat = int8["clip"] if variant == "int8" else tflite.convert(serve, unrolled, variant, clip_representative)
        paths[variant] = tflite.write_with_labels(os.path.join(out_dir, f"{variant}.tflite"), flat, classes,
                                           {**spec, "kind": "clip", "variant": variant})
    for variant in stream_variants:
        flat = int8["stream"] if variant == "int8" else tflite.convert(step, stream, variant, stream_representative)
        paths[f"stream_{variant}"] = tflite.write_with_labels(
            os.path.join(out_dir, f"stream_{variant}.tflite"), flat, classes,
            {**spec, "kind": "stream", "variant": variant, "states": {
                k: [1, *v] for k, v in shapes.items()}})
    return paths


def _entry(name, probs, reference, labels, **extra):
    return parity.entry(name, probs, reference,
                        top1_agreement=float(np.mean(probs.argmax(1) == reference.argmax(1))),
                        accuracy=float(np.mean(probs.argmax(1) == labels)), **extra)


def export(model, classes, root, name, val, calib, info, variants=None):
    """SavedModel `root/name/<version>/` and TFLite files in `root/name/tflite/<version>/` with
    parity.json; `val`/`calib`: (uint8 clips, labels) for parity and int8 calibration;
    `variants`: the TFLite variants to write (default all). Returns {"saved_model", "tflite",
    "parity"}."""
    config = model.config
    val_clips, val_labels = val
    offered = getattr(model, "tflite_variants", None) or CLIP_VARIANTS  # a model may offer fewer
    missing = [v for v in variants or () if v not in offered]
    if missing:
        raise ValueError(f"this {name} run has no {'/'.join(missing)} TFLite form; it offers {', '.join(offered)}")
    if len(offered) < len(CLIP_VARIANTS):
        log.info("%s: TFLite %s only (the model offers no other)", name, ", ".join(offered))
    variants = list(variants or offered)
    reference = np.asarray(model.predict(val_clips, batch_size=16, verbose=0)["probabilities"])
    entries = [_entry("keras", reference, reference, val_labels)]

    with saved_model.publishing(root, name) as staged:
        saved_model.write_saved_model(model, config, classes, staged.saved_model, name,
                                      serving_functions(model, config, classes), info)
        serving = tf.saved_model.load(staged.saved_model).signatures["serving_default"]
        probs = np.concatenate([serving(frames=tf.constant(val_clips[i:i + 16]))["probabilities"].numpy()
                                for i in range(0, len(val_clips), 16)])
        entries.append(_entry("saved_model", probs, reference, val_labels))
        paths = export_tflite(model, classes, staged.tflite, calib[0].astype(np.float32),
                              variants=[v for v in CLIP_VARIANTS if variants is None or v in variants],
                              stream_variants=[v for v in STREAM_VARIANTS if variants is None or v in variants],
                              info={**info, "version": staged.version})
        outputs = {}
        for key, file in bar(paths.items(), "parity of TFLite files", unit="file"):
            runner = load_predictor(file)  # a clip model, or a streaming one fed frame by frame
            outputs[key] = probs = np.stack([runner.predict(c) for c in val_clips])
            extra = {"file_bytes": os.path.getsize(file)}
            clip_twin = outputs.get(key.removeprefix("stream_")) if key.startswith("stream_") else None
            if clip_twin is not None:  # the clip file of the same quantisation
                extra["top1_agreement_with_clip_file"] = float(np.mean(probs.argmax(1) == clip_twin.argmax(1)))
            entries.append(_entry(f"tflite_{key}", probs, reference, val_labels, **extra))
        save_json(os.path.join(staged.tflite, "parity.json"), entries)
    return {"saved_model": staged.final_saved_model,
            "tflite": {k: os.path.join(staged.final_tflite, os.path.basename(p)) for k, p in paths.items()},
            "parity": entries}
