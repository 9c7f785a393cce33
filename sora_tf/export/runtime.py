"""Run what export wrote: a run directory, a SavedModel or a .tflite, behind one interface.

Each predictor has `classes`, `num_frames`, `image_size` and `predict(clip)`: uint8
[T, S, S, 3] RGB at the model's size -> probabilities [classes]. TFLite runs in LiteRT
(`ai_edge_litert`), not `tf.lite.Interpreter`, which is deprecated. `generate` does the same
for a generative model: clips sampled from a run or its SavedModel, written as video files.
"""
import json
import os

import numpy as np

from sora_tf.data.video import write_clip_video
from sora_tf.export.saved_model import newest
from sora_tf.export.tflite import read_labels


def _interpreter(path, threads=None):
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_path=path, num_threads=threads)


class _TFLite:
    """A .tflite written by export, of the `kind` its spec says (checked)."""

    kind, called = None, None

    def __init__(self, path, threads=None):
        self.classes, self.spec = read_labels(path)
        if self.spec.get("kind") != self.kind:
            raise ValueError(f"{path}: a {self.spec.get('kind')} model, not a {self.called} model")
        self.num_frames, self.image_size = self.spec["num_frames"], self.spec["image_size"]
        self.runner = _interpreter(path, threads).get_signature_runner()


class TFLiteClip(_TFLite):
    """A clip .tflite: `frames` float32 [1, T, S, S, 3] -> probabilities, embedding."""

    kind, called = "clip", "clip"

    def predict(self, clip):
        return self.runner(frames=np.asarray(clip, np.float32)[None])["probabilities"][0]


class TFLiteStream(_TFLite):
    """A streaming .tflite: one frame [1, S, S, 3] and the `state_*` tensors per call."""

    kind, called = "stream", "streaming"

    def __init__(self, path, threads=None):
        super().__init__(path, threads)
        self.reset()

    def reset(self):
        """The documented start state: every `state_*` tensor zero."""
        self.state = {k: np.zeros(v, np.float32) for k, v in self.spec["states"].items()}

    def step(self, frame):
        """Feed one frame (uint8 or float, [S, S, 3]); returns (probabilities, embedding)."""
        out = self.runner(frame=np.asarray(frame, np.float32)[None], **self.state)
        self.state = {k: out[k] for k in self.state}
        return out["probabilities"][0], out["embedding"][0]

    def run_clip(self, clip):
        self.reset()
        for frame in clip:
            probs, _ = self.step(frame)
        return probs

    predict = run_clip


class SavedModelClip:
    """A SavedModel written by export: its `serving_default` signature, as TF Serving calls it."""

    def __init__(self, path):
        import tensorflow as tf

        with open(os.path.join(path, "assets.extra", "sora_tf.json")) as f:
            meta = json.load(f)
        self.classes, self.num_frames, self.image_size = meta["classes"], meta["num_frames"], meta["image_size"]
        self._tf = tf
        self.signature = tf.saved_model.load(path).signatures["serving_default"]

    def predict(self, clip):
        frames = self._tf.constant(np.asarray(clip, np.uint8)[None])
        return self.signature(frames=frames)["probabilities"].numpy()[0]


class RunClip:
    """The best checkpoint of a training run, in Keras."""

    def __init__(self, path):
        from sora_tf.runs import load_run

        self.model, config, self.classes, _ = load_run(path)
        self.num_frames, self.image_size = config.num_frames, config.image_size

    def predict(self, clip):
        return np.asarray(self.model(np.asarray(clip)[None], training=False)["probabilities"])[0]


def load_predictor(path, threads=None):
    """A predictor for a run directory, a SavedModel (or its model folder: newest version) or a .tflite."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such model")
    if os.path.isfile(path):
        if not path.endswith(".tflite"):
            raise ValueError(f"{path}: expected a run directory, a SavedModel directory or a .tflite file")
        kind = read_labels(path)[1].get("kind")
        return TFLiteStream(path, threads) if kind == "stream" else TFLiteClip(path, threads)
    if os.path.isfile(os.path.join(path, "run.json")):
        return RunClip(path)
    if newest(path):
        return SavedModelClip(newest(path))
    raise ValueError(f"{path}: neither a run directory (run.json), a SavedModel (saved_model.pb) "
                     "nor a model folder with integer versions")


def predict_videos(predictor, videos, top_k=3):
    """[(video, [(class, probability), ...] or an error string)], eval sampling per video."""
    from sora_tf.data.pipeline import per_video

    def top(clip):
        probs = predictor.predict(clip)
        return [(predictor.classes[i], float(probs[i])) for i in np.argsort(-probs)[:top_k]]
    return per_video(videos, predictor.num_frames, (predictor.image_size,) * 2, top)


def load_generator(path):
    """(sample(labels, seed, offset) -> uint8 clips, classes, frames per clip) of a run or a
    SavedModel export (or its model folder: newest version); `offset` is the index of the
    first clip, so that batches differ."""
    import keras
    import tensorflow as tf

    from sora_tf.models.blocks import to_uint8
    from sora_tf.runs import load_run

    if os.path.isfile(os.path.join(path, "run.json")):
        model, config, classes, _ = load_run(path)
        if not hasattr(model, "sample"):
            raise ValueError(f"{path}: a {type(model).__name__} run cannot generate clips")

        def sample(labels, seed, offset):
            return np.asarray(to_uint8(model.sample(labels, seed=keras.random.SeedGenerator(seed * 1_000_003 + offset))))
        return sample, classes, config.num_frames
    found = newest(path) if os.path.isdir(path) else None
    if not found:
        raise FileNotFoundError(f"{path}: neither a run directory nor a SavedModel (or model folder)")
    path = found
    loaded = tf.saved_model.load(path)
    if "generate" not in loaded.signatures:
        raise ValueError(f"{path}: SavedModel has no 'generate' signature")
    with open(os.path.join(path, "assets.extra", "sora_tf.json")) as f:
        meta = json.load(f)
    fn = loaded.signatures["generate"]

    def sample(labels, seed, offset):
        seeds = tf.constant([[seed, offset + i] for i in range(len(labels))], tf.int32)
        return fn(class_id=tf.constant(labels, tf.int32), seed=seeds)["frames"].numpy()
    return sample, meta["classes"], meta["num_frames"]


def generate(model_path, out_dir, class_name=None, n=8, seed=0, fps=12):
    """Write `n` generated clips (per class, or of `class_name`) as video files under out_dir/<class>/."""
    if n < 1:
        raise ValueError(f"--n must be >= 1, got {n}")
    sample, classes, _ = load_generator(model_path)
    if class_name is not None and class_name not in classes:
        raise ValueError(f"--class {class_name!r} is not one of the model's classes {classes}")
    wanted = [classes.index(class_name)] if class_name is not None else range(len(classes))
    labels = np.repeat(np.asarray(list(wanted), np.int32), n)
    clips = np.concatenate([sample(labels[i:i + 16], seed, i) for i in range(0, len(labels), 16)])
    written = []
    for i, (clip, k) in enumerate(zip(clips, labels)):
        folder = os.path.join(out_dir, classes[k])
        os.makedirs(folder, exist_ok=True)
        written.append(write_clip_video(os.path.join(folder, f"{classes[k]}_s{seed}_{i:04d}.mp4"), clip, fps, 1))
    return written
