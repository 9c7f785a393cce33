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
from sora_tf.export.saved_model import newest, sampling
from sora_tf.export.tflite import read_labels


def _interpreter(path, threads=None):
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_path=path, num_threads=threads)


class _Predictor:
    """What every predictor has: `classes`, how its clips are sampled (`num_frames`, `image_size`,
    `fps`, as evaluation sampled them) and `predict(clip)` on a checked clip."""

    classes, num_frames, image_size, fps = (), 0, 0, 0.0

    def _sampling(self, spec):
        self.num_frames, self.image_size = spec["num_frames"], spec["image_size"]
        self.fps = float(spec.get("fps", 0.0))  # exports from before it was recorded: the whole video

    def checked(self, clip):
        """`clip` if it is uint8 [T, S, S, 3] at this model's T and S, else a ValueError that says
        what is expected (floats in [0, 1] cast to uint8 would be black frames)."""
        clip = np.asarray(clip)
        want = (self.num_frames, self.image_size, self.image_size, 3)
        if clip.dtype != np.uint8:
            raise ValueError(f"a clip must be uint8 RGB pixels in [0, 255], got {clip.dtype}")
        if clip.shape != want:
            raise ValueError(f"a clip must be uint8 {list(want)} (frames, height, width, RGB), got {list(clip.shape)}")
        return clip


class _TFLite(_Predictor):
    """A .tflite written by export, of the `kind` its spec says (checked)."""

    kind, called = None, None

    def __init__(self, path, threads=None):
        self.classes, self.spec = read_labels(path)
        if self.spec.get("kind") != self.kind:
            raise ValueError(f"{path}: a {self.spec.get('kind')} model, not a {self.called} model")
        self._sampling(self.spec)
        self.runner = _interpreter(path, threads).get_signature_runner()


class TFLiteClip(_TFLite):
    """A clip .tflite: `frames` float32 [1, T, S, S, 3] -> probabilities, embedding."""

    kind, called = "clip", "clip"

    def predict(self, clip):
        return self.runner(frames=self.checked(clip).astype(np.float32)[None])["probabilities"][0]


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
        """The clip's probabilities: its T frames fed one by one from the start state."""
        self.reset()
        for frame in clip:
            probs, _ = self.step(frame)
        return probs

    def predict(self, clip):
        return self.run_clip(self.checked(clip))


class SavedModelClip(_Predictor):
    """A SavedModel written by export: its `serving_default` signature, as TF Serving calls it."""

    def __init__(self, path):
        import tensorflow as tf

        with open(os.path.join(path, "assets.extra", "sora_tf.json")) as f:
            meta = json.load(f)
        self.classes = meta["classes"]
        self._sampling(meta)
        self._tf = tf
        self.signature = tf.saved_model.load(path).signatures["serving_default"]

    def predict(self, clip):
        frames = self._tf.constant(self.checked(clip)[None])
        return self.signature(frames=frames)["probabilities"].numpy()[0]


class RunClip(_Predictor):
    """The best checkpoint of a training run, in Keras."""

    def __init__(self, path):
        from sora_tf.runs import load_run

        self.model, config, self.classes, _ = load_run(path)
        self._sampling(sampling(config))

    def predict(self, clip):
        return np.asarray(self.model(self.checked(clip)[None], training=False)["probabilities"])[0]


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
        from sora_tf import models
        from sora_tf.runs import load_json
        model = load_json(os.path.join(path, "run.json"), needs=("model",))["model"]
        if models.get(model).task != "classify":
            raise ValueError(f"{path}: a {model} run ({models.get(model).task}), not a classifier"
                             + ("; use `detect`" if models.get(model).task == "detect" else ""))
        return RunClip(path)
    if newest(path):
        with open(os.path.join(newest(path), "assets.extra", "sora_tf.json")) as f:
            meta = json.load(f)
        if "max_detections" in meta or "num_frames" not in meta:
            raise ValueError(f"{path}: not a classifier's SavedModel" + ("; use `detect`" if "max_detections" in meta else ""))
        return SavedModelClip(newest(path))
    raise ValueError(f"{path}: neither a run directory (run.json), a SavedModel (saved_model.pb) "
                     "nor a model folder with integer versions")


def predict_videos(predictor, videos, top_k=3):
    """[(video, [(class, probability), ...] or an error string)], eval sampling per video."""
    from sora_tf.data.pipeline import per_video

    if top_k < 1:
        raise ValueError(f"--top must be >= 1, got {top_k}")

    def top(clip):
        probs = predictor.predict(clip)
        return [(predictor.classes[i], float(probs[i])) for i in np.argsort(-probs)[:top_k]]
    return per_video(videos, predictor.num_frames, (predictor.image_size,) * 2, top, predictor.fps)


def write_predictions(results, path):
    """`predict_videos`'s results to `path`: .csv (one row a video: its top classes and
    probabilities, or its error) or .json (a list of {"video", "top": [{"class", "probability"}],
    "error"}), written atomically."""
    import csv
    import io

    from sora_tf.atomic import save_json, save_text

    if path.endswith(".json"):
        return save_json(path, [{"video": v, "top": [{"class": c, "probability": p} for c, p in r]
                                 if not isinstance(r, str) else [], "error": r if isinstance(r, str) else None}
                                for v, r in results])
    if not path.endswith(".csv"):
        raise ValueError(f"--out {path}: write predictions to a .csv or a .json file")
    k = max((len(r) for _, r in results if not isinstance(r, str)), default=0)
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["video"] + [f"{x}{i}" for i in range(1, k + 1) for x in ("class", "probability")] + ["error"])
    for video, result in results:
        cells = [] if isinstance(result, str) else [x for c, p in result for x in (c, f"{p:.6f}")]
        writer.writerow([video] + cells + [""] * (2 * k - len(cells)) + [result if isinstance(result, str) else ""])
    return save_text(path, text.getvalue())


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
    if n < 1 or fps < 1:
        raise ValueError(f"--n and --fps must be >= 1, got {n} and {fps}")
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
