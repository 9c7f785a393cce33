"""Run what export wrote: a run directory, a SavedModel or a .tflite, behind one interface.

Each predictor has `classes`, `num_frames`, `image_size` and `predict(clip)`: uint8
[T, S, S, 3] RGB at the model's size -> probabilities [classes]. TFLite runs in LiteRT
(`ai_edge_litert`), not `tf.lite.Interpreter`, which is deprecated.
"""
import json
import os

import numpy as np

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
        from sora_tf.train.run import load_run

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
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return SavedModelClip(path)
    versions = sorted((int(v) for v in os.listdir(path) if v.isdigit()), reverse=True)
    if versions:
        return SavedModelClip(os.path.join(path, str(versions[0])))
    raise ValueError(f"{path}: neither a run directory (run.json), a SavedModel (saved_model.pb) "
                     "nor a model folder with integer versions")


def predict_videos(predictor, videos, top_k=3):
    """[(video, [(class, probability), ...] or an error string)], eval sampling per video."""
    from sora_tf.data.pipeline import eval_clip

    results = []
    for video in videos:
        try:
            clip = eval_clip(video, predictor.num_frames, (predictor.image_size,) * 2)
        except (ValueError, OSError) as e:
            results.append((video, str(e)))
            continue
        probs = predictor.predict(clip)
        order = np.argsort(-probs)[:top_k]
        results.append((video, [(predictor.classes[i], float(probs[i])) for i in order]))
    return results
