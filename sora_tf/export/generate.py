"""Export of a generative model (the generate task): SavedModel signatures, TFLite encoder and
decoder, and their parity with Keras.

SavedModel signatures (batch first; frames are uint8 RGB, any H x W, resized inside):
- `encode`: `frames` [B, T, H, W, 3] -> `z_mean`, `z_log_var` [B, D] (the content grid
  flattened, then the motion vector).
- `embed`: `frames` -> `embedding` [B, D], `z_mean` under the name every clip model's `embed` uses.
- `decode`: `z` [B, D] float32 and `class_id` [B] int32 -> `frames` uint8 [B, T, S, S, 3].
- `generate`: `class_id` [B] int32 and `seed` [B, 2] int32 -> `frames`: z drawn from the prior
  the run fitted to its training clips (`SoraVaeGan.fit_prior`), statelessly from the seed (the
  same seed gives the same clip).
- `reconstruct`: `frames` -> `frames`, decoded from z_mean (class unknown: the mean class input).
- `anomaly_score`: `frames` -> `score`, `reconstruction`, `kl`, `temporal` per clip (see `anomaly_scores`).
For a model trained without classes, `class_id` is accepted and ignored.

TFLite (builtins only, batch 1, LSTMs unrolled; see `tflite.py` for why): `decoder_float32`
and `decoder_int8` take `z` [1, D] and `label` [1, K] one-hot float32 (an input named
`class` converts without a signature) and give `frames`
float32 [1, T, S, S, 3] in [0, 255]; `encoder_float32` and `encoder_int8` take `frames` float32
in [0, 255] and give `z_mean` and `z_log_var`.
"""
import os

import numpy as np
import tensorflow as tf

from sora_tf.atomic import save_json
from sora_tf.export import parity, saved_model, tflite
from sora_tf.export.clips import export_inputs  # noqa: F401 (this task exports from the run's clips)
from sora_tf.models.blocks import to_uint8

TFLITE_VARIANTS = ("float32", "int8")


def serving_functions(model, config):
    t = config.num_frames

    k, size = config.num_classes, config.latent_shape[0]

    def labels_or_none(class_id):
        return class_id if config.conditional else None

    def checked_classes(class_id, batch):
        """class_id [batch] in [0, classes): an id out of range would decode as no class at all."""
        class_id = saved_model.checked(class_id, 1, {0: batch}, "class_id must be int32 [batch >= 1], one per clip")
        in_range = tf.reduce_all((class_id >= 0) & (class_id < k))
        with tf.control_dependencies([tf.debugging.Assert(in_range, [f"class_id must be in [0, {k})"])]):
            return tf.identity(class_id)

    def encode(frames):
        q = model.encoder(saved_model.preprocess(frames, config), training=False)
        return {"z_mean": q["z_mean"], "z_log_var": q["z_log_var"]}

    def embed(frames):
        return {"embedding": model.embed(saved_model.preprocess(frames, config))}

    def decode(z, class_id):
        z = saved_model.checked(z, 2, {0: None, 1: size}, f"z must be float32 [batch >= 1, {size}]")
        class_id = checked_classes(class_id, tf.shape(z)[0])
        return {"frames": to_uint8(model.decoder(model.decoder_inputs(z, labels_or_none(class_id)),
                                                 training=False))}

    def generate(class_id, seed):
        class_id = checked_classes(class_id, None)
        seed = saved_model.checked(seed, 2, {0: tf.shape(class_id)[0], 1: 2},
                                   "seed must be int32 [batch, 2], one pair per class_id")
        noise = tf.map_fn(lambda sd: tf.random.stateless_normal(config.noise_shape, sd), seed,
                          fn_output_signature=tf.float32)
        return decode(model.latent_from_noise(noise, labels_or_none(class_id)), class_id)

    def reconstruct(frames):
        return {"frames": to_uint8(model.reconstruct(saved_model.preprocess(frames, config)))}

    def anomaly_score(frames):
        return model.anomaly_score(saved_model.preprocess(frames, config))

    frames = tf.TensorSpec([None, t, None, None, 3], tf.uint8, name="frames")
    z = tf.TensorSpec([None, *config.latent_shape], tf.float32, name="z")
    class_id = tf.TensorSpec([None], tf.int32, name="class_id")
    return {"encode": (encode, [frames]), "embed": (embed, [frames]), "decode": (decode, [z, class_id]),
            "generate": (generate, [class_id, tf.TensorSpec([None, 2], tf.int32, name="seed")]),
            "reconstruct": (reconstruct, [frames]), "anomaly_score": (anomaly_score, [frames])}


def tflite_functions(model):
    """{name: tf.function} of the unrolled encoder and decoder, batch 1."""
    config = model.config
    unrolled = model.unrolled()
    s, t = config.image_size, config.num_frames
    frames = tf.TensorSpec([1, t, s, s, 3], tf.float32, name="frames")
    specs = {"z": tf.TensorSpec([1, *config.latent_shape], tf.float32, name="z")}
    if config.conditional:
        specs["label"] = tf.TensorSpec([1, config.num_classes], tf.float32, name="label")

    @tf.function(input_signature=[{"frames": frames}])
    def encoder(inputs):
        return unrolled.encoder(inputs["frames"], training=False)

    @tf.function(input_signature=[specs])
    def decoder(inputs):
        named = {"z": inputs["z"], **({"class": inputs["label"]} if "label" in inputs else {})}
        return {"frames": unrolled.decoder(named, training=False) * 255.0}
    return unrolled, {"encoder": encoder, "decoder": decoder}


def _decoder_inputs(model, clips, labels):
    """Decoder inputs per clip: posterior means with their classes, and as many prior draws."""
    config = model.config
    z = np.asarray(model.encoder(clips, training=False)["z_mean"])
    z = np.concatenate([z, np.random.default_rng(0).normal(size=z.shape).astype(np.float32)])
    inputs = [{"z": zi[None]} for zi in z]
    if config.conditional:
        onehot = np.eye(config.num_classes, dtype=np.float32)[np.concatenate([labels, labels])]
        for item, c in zip(inputs, onehot):
            item["label"] = c[None]
    return inputs


def _psnr(a, b, peak=255.0):
    mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(peak ** 2 / mse))


def export(model, classes, root, name, val, calib, info, variants=None):
    """SavedModel + TFLite encoder/decoder with parity entries; `val`/`calib`: (uint8 clips,
    labels); `variants`: the TFLite variants to write (default all). Returns {"saved_model",
    "tflite", "parity"}."""
    from ai_edge_litert.interpreter import Interpreter

    config = model.config
    val_clips, val_labels = val
    keras_rec = np.asarray(model.reconstruct(val_clips)) * 255.0
    unrolled, fns = tflite_functions(model)
    reference = {"encoder": [{"z_mean": np.asarray(model.encoder(c[None], training=False)["z_mean"])}
                             for c in val_clips]}
    dec_val = _decoder_inputs(model, val_clips, val_labels)
    reference["decoder"] = [{"frames": np.asarray(model.decoder(
        {"z": i["z"], **({"class": i["label"]} if "label" in i else {})}, training=False)) * 255.0} for i in dec_val]
    inputs = {"encoder": [{"frames": c[None].astype(np.float32)} for c in val_clips], "decoder": dec_val}
    calib_inputs = {"encoder": [{"frames": c[None].astype(np.float32)} for c in calib[0]],
                    "decoder": _decoder_inputs(model, calib[0], calib[1])}
    files = {}
    with saved_model.publishing(root, name) as staged:
        saved_model.write_saved_model(model, config, classes, staged.saved_model, name,
                                      serving_functions(model, config), info)
        loaded = tf.saved_model.load(staged.saved_model)
        served = loaded.signatures["reconstruct"](frames=tf.constant(val_clips))["frames"].numpy()
        entries = [parity.entry("saved_model.reconstruct", served, keras_rec, psnr_vs_keras_db=_psnr(served, keras_rec))]
        for part, fn in fns.items():
            for variant in [v for v in TFLITE_VARIANTS if variants is None or v in variants]:
                flat = tflite.convert(fn, unrolled, variant, lambda p=part: iter(calib_inputs[p]))
                key = f"{part}_{variant}"
                file = tflite.write_with_labels(
                    os.path.join(staged.tflite, f"{key}.tflite"), flat, classes,
                    {"kind": part, "variant": variant, **saved_model.sampling(config),
                     "latent_shape": list(config.latent_shape), "pixel_range": [0, 255], **info,
                     "version": staged.version})
                runner = Interpreter(model_path=file).get_signature_runner()
                out_key = "frames" if part == "decoder" else "z_mean"
                got = np.concatenate([runner(**i)[out_key] for i in inputs[part]])
                want = np.concatenate([r[out_key] for r in reference[part]])
                extra = {"file_bytes": os.path.getsize(file)}
                if part == "decoder":
                    extra["psnr_vs_keras_db"] = _psnr(got, want)
                entries.append(parity.entry(f"tflite_{key}", got, want, **extra))
                files[key] = os.path.join(staged.final_tflite, f"{key}.tflite")
        save_json(os.path.join(staged.tflite, "parity.json"), entries)
    return {"saved_model": staged.final_saved_model, "tflite": files, "parity": entries}
