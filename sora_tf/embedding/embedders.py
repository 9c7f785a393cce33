"""What turns a clip into a vector. Every embedder has a `name`, how its clips are sampled
(`num_frames`, `image_size`, `fps`, and the `views` x `crops` averaged, as evaluation does) and
`embed(clips)`: uint8 [N, T, S, S, 3] -> float32 [N, D].

- a run directory of a model with a clip embedding (`model.embed`: sora_cls, sora_vaegan);
- a SavedModel with an `embed` signature (or its model folder: newest version), or a clip
  .tflite, as `export` writes them;
- baselines that need no training, to tell what the learned embedding adds: `histogram` (colour
  and motion histograms), `pixels` (the clip shrunk to 4 frames of 8 x 8), and `untrained:RUN`
  (the run's model with the random weights it started from).
"""
import json
import os

import numpy as np

BASELINES = ("histogram", "pixels")
UNTRAINED = "untrained:"


class Embedder:
    name, num_frames, image_size, fps, views, crops = "", 16, 64, 0.0, 3, 3
    run_dir = None  # the run whose split tells which clips it trained on, if any

    def _sampling(self, spec):
        """Set the sampling from a config, an export's spec or another embedder's `sampling()`."""
        self.num_frames, self.image_size = int(spec["num_frames"]), int(spec["image_size"])
        self.fps = float(spec.get("fps", 0.0))
        self.views = int(spec.get("views", spec.get("eval_views", Embedder.views)))
        self.crops = int(spec.get("crops", spec.get("eval_crops", Embedder.crops)))

    def sampling(self):
        return {"num_frames": self.num_frames, "image_size": self.image_size, "fps": self.fps,
                "views": self.views, "crops": self.crops}


class ModelEmbedder(Embedder):
    """A Keras model with `embed(frames)`: a run's best checkpoint, or the same model untrained."""

    def __init__(self, name, model, config, run_dir=None):
        if not hasattr(model, "embed"):
            raise ValueError(f"{name}: a {type(model).__name__} has no clip embedding")
        self.name, self.model, self.run_dir = name, model, run_dir
        self._sampling(_config_sampling(config))

    def embed(self, clips):
        return np.asarray(self.model.embed(np.asarray(clips, np.float32)), np.float32).reshape(len(clips), -1)


class SavedModelEmbedder(Embedder):
    def __init__(self, path):
        import tensorflow as tf

        with open(os.path.join(path, "assets.extra", "sora_tf.json")) as f:
            meta = json.load(f)
        loaded = tf.saved_model.load(path)
        if "embed" not in loaded.signatures:
            raise ValueError(f"{path}: this SavedModel has no 'embed' signature")
        self.name, self._loaded, self._fn, self._tf = path, loaded, loaded.signatures["embed"], tf
        self._sampling(meta)

    def embed(self, clips):
        return self._fn(frames=self._tf.constant(np.asarray(clips, np.uint8)))["embedding"].numpy()


class TFLiteEmbedder(Embedder):
    """A clip .tflite written by export (`frames` -> `embedding`); batch 1, so one clip a call."""

    def __init__(self, path):
        from sora_tf.export.runtime import TFLiteClip

        self.name, self._clip = path, TFLiteClip(path)
        self._sampling(self._clip.spec)

    def embed(self, clips):
        return np.stack([self._clip.runner(frames=np.asarray(c, np.float32)[None])["embedding"][0] for c in clips])


class HistogramEmbedder(Embedder):
    """No training: a joint RGB histogram of the clip's pixels (4 x 4 x 4 bins), a histogram of
    how much each pixel changes between frames (16 bins, logarithmic), and where the clip moves
    (mean change on a 4 x 4 grid); each part sums to one, square-rooted (Hellinger), so that the
    cosine of two clips compares their distributions."""

    name = "histogram"

    def embed(self, clips):
        x = np.asarray(clips)
        n = len(x)
        q = (x // 64).astype(np.int32)  # 4 levels per channel
        colour = np.zeros((n, 64), np.float32)
        codes = (q[..., 0] * 16 + q[..., 1] * 4 + q[..., 2]).reshape(n, -1)
        for i in range(n):
            colour[i] = np.bincount(codes[i], minlength=64)
        grey = x.astype(np.float32).mean(-1)
        change = np.abs(np.diff(grey, axis=1))  # [N, T-1, S, S]
        edges = np.concatenate([[0.0], np.geomspace(1.0, 256.0, 16)])
        motion = np.stack([np.histogram(c, bins=edges)[0] for c in change.reshape(n, -1)]).astype(np.float32)
        s = change.shape[-1] // 4 * 4
        cells = change[..., :s, :s].reshape(n, change.shape[1], 4, s // 4, 4, s // 4).mean(axis=(1, 3, 5))
        parts = [colour, motion, cells.reshape(n, 16) + 1e-6]
        return np.concatenate([np.sqrt(p / p.sum(1, keepdims=True)) for p in parts], axis=1)


class PixelsEmbedder(Embedder):
    """No training: 4 frames spread over the clip, each shrunk to 8 x 8 (area), centred on grey."""

    name = "pixels"

    def embed(self, clips):
        import cv2

        x = np.asarray(clips)
        frames = np.linspace(0, x.shape[1] - 1, 4).round().astype(int)
        small = [[cv2.resize(clip[t], (8, 8), interpolation=cv2.INTER_AREA) for t in frames] for clip in x]
        return (np.asarray(small, np.float32).reshape(len(x), -1) - 128.0) / 128.0


def _config_sampling(config):
    return {"num_frames": config.num_frames, "image_size": config.image_size, "fps": config.fps,
            "eval_views": getattr(config, "eval_views", Embedder.views),
            "eval_crops": getattr(config, "eval_crops", Embedder.crops)}


def _untrained(run_dir):
    import keras

    from sora_tf import models
    from sora_tf.runs import load_run

    model, config, _, info = load_run(run_dir)
    keras.utils.set_random_seed(config.seed)  # the same start weights every time
    fresh = models.get(info["model"]).build(config)
    return ModelEmbedder(UNTRAINED + run_dir, fresh, config)


def load_embedder(spec, like=None):
    """The embedder `spec` names: a run directory, a SavedModel (or its model folder), a clip
    .tflite, `histogram` or `pixels` (sampled as the embedder `like`, else as sora_cls's
    defaults sample), or `untrained:RUN`."""
    from sora_tf.export.saved_model import newest
    from sora_tf.export.tflite import read_labels

    if spec in BASELINES:
        embedder = HistogramEmbedder() if spec == "histogram" else PixelsEmbedder()
        if like is None:
            from sora_tf.models.sora_cls import Config
            embedder._sampling(_config_sampling(Config()))
        else:
            embedder._sampling(like.sampling())
        return embedder
    if spec.startswith(UNTRAINED):
        return _untrained(spec[len(UNTRAINED):])
    if not os.path.exists(spec):
        raise FileNotFoundError(f"{spec}: no such model (a run, a SavedModel, a clip .tflite, "
                                f"{' or '.join(BASELINES)}, or {UNTRAINED}RUN)")
    if os.path.isfile(spec):
        if not spec.endswith(".tflite"):
            raise ValueError(f"{spec}: expected a run directory, a SavedModel directory or a clip .tflite")
        if read_labels(spec)[1].get("kind") != "clip":
            raise ValueError(f"{spec}: not a clip .tflite (a streaming file embeds frame by frame); "
                             "use float32.tflite or int8.tflite")
        return TFLiteEmbedder(spec)
    if os.path.isfile(os.path.join(spec, "run.json")):
        from sora_tf.runs import load_run
        model, config, _, _ = load_run(spec)
        return ModelEmbedder(spec, model, config, run_dir=spec)
    if newest(spec):
        return SavedModelEmbedder(newest(spec))
    raise ValueError(f"{spec}: neither a run directory (run.json), a SavedModel (saved_model.pb) "
                     "nor a model folder with integer versions")
