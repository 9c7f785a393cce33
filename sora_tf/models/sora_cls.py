"""sora_cls: the Sora representation network.

A per-frame CNN runs over T frames (`TimeDistributed`), an LSTM or GRU reads the sequence, and
its last state becomes a dense clip `embedding`; a softmax head classifies it. Inputs are frames
in [0, 255] (uint8 or float) of shape [B, T, H, W, 3]; normalisation is part of the model, so
what was trained is what gets exported.

With few sources to learn from, the `motion` recipe replaces the network: 36 statistics of the
clip's optical flow (`sora_tf/models/flow.py`), standardised, and a linear layer. On fight_surv
(30 sources) it ranks unseen sources better than the network (docs/sora_cls.md, "Fifth study");
`recipe="auto"` picks it for data of fewer than MOTION_SOURCES sources.

Run it: `make train MODEL=sora_cls`, or `python -m sora_tf train --model sora_cls --preset tiny`.
Design notes and measurements: docs/sora_cls.md.
"""
import dataclasses

import keras
import numpy as np
from keras import layers, ops

from sora_tf.config import check_choices, check_fractions, from_dict, validate_split
from sora_tf.models import flow
from sora_tf.models.blocks import (BACKBONES, FrameDiff, FrameTimeDistributed, backbone_cnn, clipped_difference, frame_cnn,
                                   normal_flow, pixel_normalization)

# The task code that fits, evaluates and exports this model (sora_tf/train/classify.py and
# sora_tf/export/classify.py), shared by every classifier in the zoo.
task = "classify"

# Training sources (groups, or clips where the data names none) below which `recipe="auto"` trains
# the motion statistics instead of the network: with 30 sources (fight_surv) the statistics win by
# 6 to 8 points on unseen sources, with 2,900 generated clips the network does (0.94 against 0.58).
MOTION_SOURCES = 100

# Fields added after runs were saved, with the value those runs had (a saved model or a resumed run).
ADDED_FIELDS = {"pooling": "last", "aug_warp_fraction": 1.0, "normal_flow": False}


@dataclasses.dataclass(frozen=True)
class Config:
    """Defaults train on the generated data: `python -m sora_tf train --model sora_cls`."""

    # Input
    num_frames: int = 16
    image_size: int = 96  # network frames (64: default data test 0.940 not 0.953, 1/2.8 the time; docs/sora_cls.md)
    pixel_mean: tuple = (0.5, 0.5, 0.5)
    pixel_std: tuple = (0.25, 0.25, 0.25)
    # Model
    num_classes: int = 7
    # "network" (the CNN-RNN), "motion" (optical-flow statistics and a linear layer) or "auto":
    # motion for training data of fewer than MOTION_SOURCES sources, else the network. The run
    # saves what auto chose; a model built without data (auto unresolved) is the network.
    recipe: str = "auto"
    motion_size: int = 64  # the flow's frame side: image_size, or this when image_size is larger
    motion_window: int = 9  # Lucas-Kanade window (pixels at that size) ...
    motion_levels: int = 2  # ... pyramid levels ...
    motion_iterations: int = 2  # ... and warped solves per level
    motion_learning_rate: float = 0.03  # the motion recipe's (its 146 weights see 140 steps on fight_surv)
    cnn_widths: tuple = (24, 48, 64, 96)
    # A keras.applications frame CNN instead of ours ("mobilenet_v3_small", "mobilenet_v3_large",
    # "efficientnet_b0"), with `backbone_weights`: "" (random), "imagenet" (downloads) or a file.
    backbone: str = ""
    backbone_weights: str = ""
    frame_features: int = 128
    rnn: str = "lstm"
    rnn_units: int = 128
    rnn_layers: int = 1
    # The embedding from the RNN's outputs: their "mean" over the frames so far (the stream keeps
    # their sum) or the "last" state. Mean: +5 cv points on fight_surv, every fold (docs/sora_cls.md).
    pooling: str = "mean"
    embedding_dim: int = 128
    dropout: float = 0.2
    frame_diff: bool = True  # feed each frame with its difference from the previous one
    diff_scale: float = 10.0  # gain on those differences, see FrameDiff
    diff_clip: float = 4.0  # ... then clipped to +-diff_clip
    # Two more channels, the motion along each pixel's gradient, free of contrast (blocks.normal_flow);
    # an option: default data +0.5 test points, fight_surv network -4, slower stream (docs/sora_cls.md).
    normal_flow: bool = False
    appearance: bool = True  # the frame itself beside its difference (false: motion only, no scene)
    unroll: bool = False  # export sets it for a fixed-T builtins-only TFLite graph
    # Training
    epochs: int = 20
    batch_size: int = 16
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    label_smoothing: float = 0.0  # e.g. 0.1: +1.5 points on fight_surv, inside the spread (docs/sora_cls.md)
    # Validate, checkpoint and export an exponential moving average of the weights (0: off),
    # warmed up over the first steps (`sora_tf.train.fitting.AdamWarmEMA`; A/B in docs/sora_cls.md).
    ema_momentum: float = 0.99
    val_fraction: float = 0.2
    test_fraction: float = 0.15  # held out first, evaluated once at the end (0: none)
    # "true": the validation clips train too, where a test part is held out (no validation
    # figures; the run keeps its last epoch). "auto": true for the motion recipe, whose fixed
    # schedule leaves validation nothing to pick (+1 to 5 points on fight_surv: docs/sora_cls.md).
    train_on_val: str = "auto"
    split: str = "auto"  # "grouped" keeps each source video on one side; auto: grouped if the data has groups
    seed: int = 0
    stride_range: float = 2.0  # training strides span eval stride / stride_range .. eval stride
    fps: float = 0.0  # sample clips at this frame rate (T / fps seconds); 0: over the whole video
    eval_views: int = 3  # multi-view evaluation: temporal clips per video ...
    eval_crops: int = 3  # ... times spatial crops, softmax averaged
    patience: int = 12
    # What picks best.keras and stops early: "val_accuracy", "val_loss", "last" (the end of the
    # schedule, no early stop), or "auto": "last" when the validation part has under 200 clips,
    # where any pick is luck (fight_surv over 3 seeds: docs/sora_cls.md).
    monitor: str = "auto"
    class_weight: str = "auto"  # "balanced", "none", or "auto": balanced when classes differ 1.5x or more
    cache_mb: int = 2048  # decoded training videos up to this size stay in memory between epochs
    init_frame_cnn: str = ""  # a sora_vaegan run: its encoder's frame CNN stages initialise ours
    # Compute in 16-bit floats (mixed_float16 on a GPU, mixed_bfloat16 on a CPU; weights, softmax
    # and losses stay float32; exports are float32) and compile the training step with XLA.
    mixed_precision: bool = False
    jit_compile: bool = False
    # Augmentation (one draw per clip), mild: strong jitter slowed learning (docs/sora_cls.md).
    aug_zoom: float = 0.1
    aug_translate: float = 0.05
    aug_rotation_deg: float = 3.0
    # The share of clips that get the zoom, shift and turn above; the rest keep their pixels (a
    # bilinear warp smooths a clip: half warped, +1 point on the default data; docs/sora_cls.md).
    aug_warp_fraction: float = 0.5
    aug_flip: bool = True
    aug_brightness: float = 0.15
    aug_contrast: float = 0.15
    aug_saturation: float = 0.2
    aug_hue: float = 0.0
    aug_noise_std: float = 2.0

    @classmethod
    def tiny(cls):
        """Seconds on two CPU cores (`--preset tiny`); the network, not auto's motion recipe."""
        return cls(num_frames=8, image_size=32, cnn_widths=(8, 16, 16), frame_features=32,
                   rnn_units=32, embedding_dim=32, epochs=2, batch_size=8, patience=2,
                   ema_momentum=0.0, recipe="network")  # EMA off: tests that check the average turn it on

    @property
    def flow_size(self):
        """The motion recipe's frame side for its flow."""
        return min(self.image_size, self.motion_size)

    def for_data(self, sources):
        """This config for training data of `sources` sources: `recipe="auto"` resolved (the
        network whenever a backbone or init_frame_cnn is given, or the frames are too few or
        small for the flow), and the motion recipe's training settings (its learning rate, no
        pixel noise, the eval stride only, the validation clips in training unless a monitor
        needs them)."""
        if self.recipe == "network":
            return self
        # No pixel noise: it makes flow where nothing moves. No shorter training strides: they
        # shrink every magnitude the statistics measure. (fight_surv, fold 1: 0.51 with both.)
        # Every clip warped, as measured (half of them: cv 0.789 one view, 0.814 multi-view).
        # Frames decoded at the flow's size: finer ones would only be resized down in the graph.
        motion = dataclasses.replace(self, recipe="motion", learning_rate=self.motion_learning_rate,
                                     image_size=self.flow_size, aug_noise_std=0.0, stride_range=1.0,
                                     aug_warp_fraction=1.0,
                                     train_on_val=self.train_on_val if self.train_on_val != "auto"
                                     else "true" if self.monitor in ("auto", "last") else "false")
        if self.recipe == "motion":
            return motion
        if sources >= MOTION_SOURCES or self.backbone or self.init_frame_cnn:  # the last two: parts of a network
            return dataclasses.replace(self, recipe="network")
        try:
            motion.validate()
        except ValueError:  # too few frames or pixels for its flow
            return dataclasses.replace(self, recipe="network")
        return motion

    def validate(self):
        validate_split(self)
        check_choices(self, {"class_weight": ("auto", "balanced", "none"),
                             "monitor": ("auto", "val_accuracy", "val_loss", "last"), "pooling": ("last", "mean"),
                             "train_on_val": ("auto", "true", "false"), "recipe": ("auto", "network", "motion"),
                             "rnn": ("lstm", "gru")})
        check_fractions(self, {"label_smoothing": False, "aug_warp_fraction": True, "ema_momentum": False})
        if self.backbone and self.backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {sorted(BACKBONES)} (or empty), got {self.backbone!r}")
        if not self.frame_diff and (not self.appearance or self.normal_flow):
            raise ValueError("appearance=false and normal_flow=true feed the CNN what frame_diff makes: they need "
                             "frame_diff=true")
        if self.backbone_weights and not self.backbone:
            raise ValueError("backbone_weights needs a backbone")
        if self.train_on_val == "true" and self.monitor not in ("auto", "last"):
            raise ValueError(f"train_on_val=true leaves no validation clips for monitor={self.monitor}: "
                             "use monitor=last (or auto), or train_on_val=false")
        coarsest = self.flow_size // 2 ** (self.motion_levels - 1)
        if self.recipe == "motion" and (self.num_frames < 3 or coarsest <= max(self.motion_window // 2, 2)):
            raise ValueError(f"the motion recipe needs num_frames >= 3, and a coarsest pyramid level (flow size / "
                             f"2^(motion_levels - 1) = {coarsest} px) wider than motion_window // 2 and 2; got num_frames="
                             f"{self.num_frames}, image_size={self.image_size}, motion_size={self.motion_size}, "
                             f"motion_levels={self.motion_levels}, motion_window={self.motion_window}")
        if self.recipe == "motion" and (self.backbone or self.init_frame_cnn):
            raise ValueError("backbone and init_frame_cnn are parts of the network: use recipe=network (or auto)")
        if self.motion_window < 3 or self.motion_window % 2 == 0:
            raise ValueError(f"motion_window must be odd and >= 3, got {self.motion_window}")
        for key in ("num_frames", "image_size", "num_classes", "rnn_units", "rnn_layers", "motion_size", "motion_levels",
                    "motion_iterations", "embedding_dim", "epochs", "batch_size", "stride_range", "eval_views", "eval_crops"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if not self.cnn_widths or min(self.cnn_widths) < 1:
            raise ValueError(f"cnn_widths needs positive widths, got {self.cnn_widths}")
        if self.fps < 0:
            raise ValueError(f"fps must be >= 0 (0: whole video), got {self.fps}")
        if self.cache_mb < 0:
            raise ValueError(f"cache_mb must be >= 0, got {self.cache_mb}")
        if len(self.pixel_mean) != 3 or len(self.pixel_std) != 3:
            raise ValueError("pixel_mean and pixel_std need 3 values (R, G, B)")


def rnn_layer(config, return_sequences, name):
    cls = layers.LSTM if config.rnn == "lstm" else layers.GRU
    rnn = cls(config.rnn_units, return_sequences=return_sequences, unroll=config.unroll, name=name)
    rnn.cell.name = f"{name}_cell"  # unique, so the streaming model can hold several cells
    return rnn


@keras.saving.register_keras_serializable("sora_tf")
class SoraCls(keras.Model):
    """Outputs a dict: `probabilities` [B, classes] and `embedding` [B, embedding_dim]."""

    def __init__(self, config, **kwargs):
        config = config if isinstance(config, Config) else from_dict(Config, {**ADDED_FIELDS, **config})
        config.validate()
        t, s = config.num_frames, config.image_size
        if config.recipe == "motion":
            self._init_motion(config, **kwargs)
            return
        # === Layers ===
        normalize = pixel_normalization(config.pixel_mean, config.pixel_std)
        channels = (6 if config.appearance else 3) + 2 * config.normal_flow if config.frame_diff else 3
        if config.backbone:
            cnn = backbone_cnn((s, s, channels), config.backbone, config.backbone_weights or None,
                               config.frame_features, config.pixel_mean, config.pixel_std)
        else:
            cnn = frame_cnn((s, s, channels), config.cnn_widths, config.frame_features)
        sequences = config.pooling != "last"
        rnns = [rnn_layer(config, sequences or i < config.rnn_layers - 1, f"rnn{i}")
                for i in range(config.rnn_layers)]
        # === Functional Model ===
        frames = keras.Input((t, s, s, 3), name="frames")
        x = normalize(layers.Identity(name="to_float", dtype="float32")(frames))
        if config.frame_diff:
            x = FrameDiff(config.diff_scale, config.diff_clip, config.appearance, config.normal_flow, name="frame_diff")(x)
        x = FrameTimeDistributed(cnn, name="frame_features")(x)
        for rnn in rnns:
            x = rnn(x)
        if sequences:
            x = layers.GlobalAveragePooling1D(name="time_pool")(x)
        embedding = layers.Dense(config.embedding_dim, name="embedding")(x)
        logits = layers.Dense(config.num_classes, name="logits")(
            layers.Dropout(config.dropout, name="head_dropout")(embedding))
        probabilities = layers.Softmax(name="probabilities", dtype="float32")(logits)
        super().__init__(inputs=frames, outputs={"probabilities": probabilities, "embedding": embedding},
                         **kwargs)
        # === Config ===
        self.config = config

    def _init_motion(self, config, **kwargs):
        frames = keras.Input((config.num_frames, config.image_size, config.image_size, 3), name="frames")
        probabilities, embedding = flow.classifier(frames, config)
        super().__init__(inputs=frames, outputs={"probabilities": probabilities, "embedding": embedding}, **kwargs)
        self.config = config

    @property
    def tflite_variants(self):
        """The TFLite clip variants its export offers (streams: those that have one). The motion
        recipe: float32 only. Its 2 x 2 solve's squared gradients (up to 10^9) are beyond float16
        (NaN) and integers, and its 146 weights leave nothing to shrink."""
        return ("float32",) if self.config.recipe == "motion" else None

    def get_config(self):
        return {"config": dataclasses.asdict(self.config), "name": self.name, "trainable": self.trainable}

    @classmethod
    def from_config(cls, config):
        # The checkpoint brings the weights: a backbone's start weights are not needed (nor fetched).
        return cls(**{**config, "config": {**config["config"], "backbone_weights": ""}})

    def embed(self, frames):
        """The clip embedding [B, embedding_dim] of frames [B, T, S, S, 3] in [0, 255]."""
        return self(frames, training=False)["embedding"]

    # === Export forms (sora_tf/export/classify.py asks the model for them) ===
    def stream_state_shapes(self):
        return stream_state_shapes(self.config)

    def init_states(self, batch=1):
        return init_states(self.config, batch)

    def stream(self, batch=None):
        return stream_model(self, batch)

    def unrolled(self, implementation=2):
        """The same model with its RNN unrolled over T (a fixed-size graph, no WHILE loop, as
        TFLite's builtins need). `implementation=1` computes each gate with its own matmul: the
        same numbers, which the int8 stream tracks more closely (docs/sora_cls.md)."""
        if self.config.recipe == "motion":  # no RNN: the graph is fixed-size already
            return self
        copy = build(dataclasses.replace(self.config, unroll=True, backbone_weights=""))
        copy.set_weights(self.get_weights())
        for i in range(self.config.rnn_layers):
            copy.get_layer(f"rnn{i}").cell.implementation = implementation
        return copy


@keras.saving.register_keras_serializable("sora_tf")
class RunningMean(layers.Layer):
    """The stream's mean pooling over time: (mean so far, new sum, new count) from this frame's
    features and the running sum and count. The int8 export matches the stream's ops with its
    loop's by name (sora_tf/export/tflite.py), and the converter renames an op that writes an
    output after that output; so each state is first read by an op of its own, the identity on
    every state a stream reaches (count >= 0, and |sum| <= count, as LSTM and GRU outputs lie in
    [-1, 1]), and the adds write the outputs."""

    def call(self, x, total, count):
        count = ops.maximum(count, 0.0)
        total = ops.minimum(total, count)
        total, count = total + x, count + 1.0
        return total / count, total, count


def build(config):
    return SoraCls(config, name="sora_cls")


def stream_state_shapes(config):
    """{name: shape without batch} of the streaming model's recurrent state, all-zero at the start.

    `state_prev`: the previous frame as fed (pixels); `state_started`: 0 before the first frame,
    whose difference is then zero, as in the clip model; `state_h<i>` (and `state_c<i>` for
    LSTM): the RNN layers' states; with mean pooling, `state_sum` and `state_count`."""
    if config.recipe == "motion":
        return flow.state_shapes(config.flow_size)
    s, units = config.image_size, config.rnn_units
    shapes = {"state_prev": (s, s, 3), "state_started": (1,)} if config.frame_diff else {}
    for i in range(config.rnn_layers):
        shapes[f"state_h{i}"] = (units,)
        if config.rnn == "lstm":
            shapes[f"state_c{i}"] = (units,)
    if config.pooling == "mean":
        shapes["state_sum"], shapes["state_count"] = (units,), (1,)
    return shapes


def init_states(config, batch=1):
    """The streaming model's start state: zeros, as float32 numpy arrays."""
    return {k: np.zeros((batch, *v), np.float32) for k, v in stream_state_shapes(config).items()}


def stream_model(clip_model, batch=None):
    """The MoViNet-style streaming form of a clip model, sharing its layers (and so its weights).

    Inputs: `frame` [B, H, W, 3] in [0, 255] and the `state_*` tensors; outputs: `probabilities`,
    `embedding` and the new `state_*`. Fed a clip's T frames one by one from `init_states`, it
    gives the clip model's outputs for that clip.
    """
    config = clip_model.config
    if config.recipe == "motion":
        return flow.stream_model(clip_model, batch)
    s = config.image_size
    shapes = stream_state_shapes(config)
    # === Layers ===
    normalize = pixel_normalization(config.pixel_mean, config.pixel_std)  # fixed, nothing to share
    cnn = clip_model.get_layer("frame_features").layer
    cells = [clip_model.get_layer(f"rnn{i}").cell for i in range(config.rnn_layers)]
    # === Functional Model ===
    frame = keras.Input((s, s, 3), batch_size=batch, name="frame")
    state = {k: keras.Input(v, batch_size=batch, name=k) for k, v in shapes.items()}
    frame_f32 = layers.Identity(dtype="float32")(frame)
    new_state = {}
    if config.frame_diff:
        # Previous and current frame in one tensor (batch 2B), as in the clip model: int8 scales both
        # alike, so a still pixel's difference is exactly zero (`clipped_difference`). Stacked on a
        # new axis, the 5-D tensors left XNNPACK: 3.2 to 4.2 ms a frame at 172 px, not 1.1 to 1.4.
        pair = ops.concatenate([state["state_prev"], frame_f32], axis=0)
        pair_n = normalize(pair)
        k_previous, kx = ops.split((config.diff_scale / config.diff_clip) * pair_n, 2, axis=0)
        diff = state["state_started"][:, :, None, None] * clipped_difference(kx, k_previous, config.diff_clip)
        current = ops.split(pair, 2, axis=0)[1]
        new_state["state_prev"], new_state["state_started"] = current, ops.ones_like(state["state_started"])
        previous_n, current_n = ops.split(pair_n, 2, axis=0)
        if config.normal_flow:
            moving = state["state_started"][:, :, None, None] * normal_flow(current_n, previous_n)
            diff = ops.concatenate([diff, moving], axis=-1)
        x = ops.concatenate([current_n, diff], axis=-1) if config.appearance else diff
    else:
        x = normalize(frame_f32)
    x = cnn(x)
    for i, cell in enumerate(cells):
        names = [f"state_h{i}"] + ([f"state_c{i}"] if config.rnn == "lstm" else [])
        x, states = cell(x, [state[n] for n in names])
        new_state.update(zip(names, states))
    if config.pooling == "mean":
        x, new_state["state_sum"], new_state["state_count"] = RunningMean(name="time_pool")(
            x, state["state_sum"], state["state_count"])
    embedding = clip_model.get_layer("embedding")(x)
    probabilities = ops.softmax(clip_model.get_layer("logits")(embedding))
    return keras.Model({"frame": frame, **state},
                       {"probabilities": probabilities, "embedding": embedding, **new_state},
                       name=f"{clip_model.name}_stream")
