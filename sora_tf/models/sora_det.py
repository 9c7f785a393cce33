"""sora_det: the Sora representation applied to video pedestrian detection.

Each frame goes through a CNN with its difference from the previous frame (as in sora_cls); a
convolutional GRU carries a state over time at stride 16; an FPN-style decoder brings that back
to stride 4, where an anchor-free head predicts a person heatmap and, at each cell, the
distances to the four sides of the box (CenterNet's heatmap with TTFNet's box regression).
Boxes are decoded in the graph: 3x3 peak picking, the top `max_detections` peaks, their sides.
`temporal=false` is the same network on single frames (no difference, no state): the ablation
that measures what time adds.

Inputs: frames in [0, 255] [B, T, H, W, 3], H and W multiples of 16. The clip model returns the
maps for training; `stream()` is one frame plus state in, boxes plus new state out, with the
same weights. Design notes and measurements: docs/sora_det.md.
"""
import dataclasses

import keras
import numpy as np
from keras import layers, ops

from sora_tf.config import check_fractions, check_split_fractions, from_dict
from sora_tf.models.blocks import FrameDiff, clipped_difference, pixel_normalization

task = "detect"
STRIDE = 4  # of the output maps


@dataclasses.dataclass(frozen=True)
class Config:
    """Defaults train on a fixed street camera such as PETS09-S2L1: `make train MODEL=sora_det`."""

    # Input: frames are resized to image_height x image_width (multiples of 16)
    num_frames: int = 6  # training clip length
    image_height: int = 288
    image_width: int = 384
    crop_height: int = 192  # training crops of the augmented frames
    crop_width: int = 256
    pixel_mean: tuple = (0.5, 0.5, 0.5)
    pixel_std: tuple = (0.25, 0.25, 0.25)
    num_classes: int = 1  # person
    # Model
    widths: tuple = (16, 32, 64, 96)  # stages at stride 2, 4, 8, 16
    state_channels: int = 64
    head_width: int = 48
    temporal: bool = True  # frame difference in, GRU state over time; false: the single-frame ablation
    diff_scale: float = 10.0
    diff_clip: float = 4.0
    max_detections: int = 50
    score_threshold: float = 0.3  # `count` of the SavedModel counts the boxes at or above it
    # Targets (TTFNet): Gaussian heatmap and box-regression area of alpha x the box
    gaussian_alpha: float = 0.54
    box_loss_weight: float = 5.0
    max_objects: int = 64  # per frame, after which boxes are dropped (logged)
    # Training
    epochs: int = 24
    steps_per_epoch: int = 0  # 0: training frames / (batch_size x num_frames)
    batch_size: int = 4
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    ema_momentum: float = 0.99
    seed: int = 0
    patience: int = 8
    # Compute in 16-bit floats (mixed_float16 on a GPU, mixed_bfloat16 on a CPU; weights, softmax
    # and losses stay float32; exports are float32) and compile the training step with XLA.
    mixed_precision: bool = False
    jit_compile: bool = False
    # Temporal split: first part train, middle validation, last test, gaps between
    val_fraction: float = 0.068
    test_fraction: float = 0.269
    split_gap_seconds: float = 2.5
    # Measurement beside the model, on the same test frames
    ablation: bool = True  # also train the single-frame twin with the same schedule
    hog_baseline: bool = True  # OpenCV's HOG people detector
    hog_upscale: float = 2.0
    # Augmentation (one draw per clip, boxes moved with the pixels)
    aug_zoom: tuple = (-0.5, 0.25)  # Keras RandomZoom's range: -0.5 zooms in 2x, 0.25 out 1.33x
    aug_translate: float = 0.1
    aug_flip: bool = True
    aug_paste: int = 3  # people of the clip pasted again elsewhere (copy-paste; 0: off)
    aug_paste_scale: tuple = (0.8, 1.6)
    aug_paste_soft: bool = True  # paste an ellipse inside the box, not the box (docs/sora_det.md)
    aug_brightness: float = 0.2
    aug_contrast: float = 0.2

    @classmethod
    def tiny(cls):
        """Seconds on two CPU cores."""
        return cls(num_frames=3, image_height=96, image_width=128, crop_height=64, crop_width=96,
                   widths=(8, 8, 16, 16), state_channels=8, head_width=8, max_detections=10, epochs=2,
                   steps_per_epoch=3, batch_size=2, ema_momentum=0.0, patience=2, split_gap_seconds=1.0,
                   ablation=False, hog_baseline=False)

    def validate(self):
        for key in ("num_frames", "image_height", "image_width", "crop_height", "crop_width", "state_channels",
                    "head_width", "max_detections", "max_objects", "epochs", "batch_size"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        for key in ("image_height", "image_width", "crop_height", "crop_width"):
            if getattr(self, key) % 16:
                raise ValueError(f"{key} must be a multiple of 16, got {getattr(self, key)}")
        if self.crop_height > self.image_height or self.crop_width > self.image_width:
            raise ValueError("the training crop must fit in the frame (crop_* <= image_*)")
        if len(self.widths) != 4 or min(self.widths) < 1:
            raise ValueError(f"widths needs 4 positive widths (strides 2, 4, 8, 16), got {self.widths}")
        if self.num_classes != 1:
            raise ValueError("sora_det detects one class (person)")
        check_split_fractions(self)
        check_fractions(self, {"score_threshold": True, "ema_momentum": False})
        if len(self.aug_zoom) != 2 or not -1 < self.aug_zoom[0] <= self.aug_zoom[1]:
            raise ValueError(f"aug_zoom needs two numbers (lowest, highest) above -1, got {self.aug_zoom}")
        if self.aug_paste < 0 or len(self.aug_paste_scale) != 2 or not 0 < self.aug_paste_scale[0] <= self.aug_paste_scale[1]:
            raise ValueError(f"aug_paste must be >= 0 and aug_paste_scale two positive numbers (lowest, highest), "
                             f"got {self.aug_paste}, {self.aug_paste_scale}")
        if self.steps_per_epoch < 0 or self.hog_upscale <= 0:
            raise ValueError("steps_per_epoch must be >= 0 and hog_upscale > 0")

    @property
    def size(self):
        return self.image_height, self.image_width


def _conv(x, width, stride, name, kernel=3):
    x = layers.Conv2D(width, kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def frame_net(config):
    """[H, W, C] -> features at strides 4, 8 and 16 (two 3x3 convs a stage, the first stride 2)."""
    inputs = keras.Input((None, None, 6 if config.temporal else 3), name="frame")
    x, outputs = inputs, []
    for i, width in enumerate(config.widths):
        x = _conv(x, width, 2, f"s{i}a")
        x = _conv(x, width, 1, f"s{i}b")
        if i:
            outputs.append(x)
    return keras.Model(inputs, outputs, name="frame_features")


def head_net(config):
    """(stride 4, stride 8, stride-16 state) -> heatmap logits [h, w, 1], box sides [h, w, 4] in
    input pixels, at stride 4."""
    w4, w8 = config.widths[1], config.widths[2]
    s4, s8 = keras.Input((None, None, w4), name="s4"), keras.Input((None, None, w8), name="s8")
    g16 = keras.Input((None, None, config.state_channels), name="g16")
    width = config.head_width
    x = layers.Conv2D(width, 1, name="lat16")(g16)
    x = layers.Add(name="add8")([layers.UpSampling2D(2, name="up8")(x), layers.Conv2D(width, 1, name="lat8")(s8)])
    x = _conv(x, width, 1, "fuse8")
    x = layers.Add(name="add4")([layers.UpSampling2D(2, name="up4")(x), layers.Conv2D(width, 1, name="lat4")(s4)])
    x = _conv(x, width, 1, "fuse4")
    heat = _conv(x, width, 1, "heat")
    # Focal-loss prior: every cell starts at p = 0.1 (CenterNet's -2.19). The outputs are float32
    # under mixed precision too, for the losses and the box decoding.
    heat = layers.Conv2D(1, 1, bias_initializer=keras.initializers.Constant(-2.19), name="heatmap",
                         dtype="float32")(heat)
    box = _conv(x, width, 1, "box")
    box = layers.Conv2D(4, 1, name="box_raw", dtype="float32")(box)
    sides = layers.Activation("softplus", name="sides_softplus", dtype="float32")(box)
    sides = layers.Rescaling(16.0, name="sides", dtype="float32")(sides)  # TTFNet's scale: a unit is 16 px
    return keras.Model([s4, s8, g16], [heat, sides], name="head")


@keras.saving.register_keras_serializable("sora_tf")
class ConvGRU(layers.Layer):
    """A convolutional GRU cell: `call(x, h) -> new h`, 3x3 convolutions for the gates."""

    def __init__(self, channels, **kwargs):
        super().__init__(**kwargs)
        self.channels = channels
        self.gates = layers.Conv2D(2 * channels, 3, padding="same", name="gates")
        self.candidate = layers.Conv2D(channels, 3, padding="same", name="candidate")

    def build(self, x_shape, h_shape=None):
        c = x_shape[-1] + self.channels
        self.gates.build((None, None, None, c))
        self.candidate.build((None, None, None, c))

    def call(self, x, h):
        zr = ops.sigmoid(self.gates(ops.concatenate([x, h], axis=-1)))
        z, r = zr[..., :self.channels], zr[..., self.channels:]
        n = ops.tanh(self.candidate(ops.concatenate([x, r * h], axis=-1)))
        return h + z * (n - h)

    def get_config(self):
        return {**super().get_config(), "channels": self.channels}


@keras.saving.register_keras_serializable("sora_tf")
class MergeTime(layers.Layer):
    """[B, T, ...] -> [B * T, ...] for any spatial size (the frames of every clip, one batch)."""

    def call(self, x):
        shape = ops.shape(x)
        return ops.reshape(x, (-1, *shape[2:]))

    def compute_output_shape(self, input_shape):
        return (None, *input_shape[2:])


@keras.saving.register_keras_serializable("sora_tf")
class SplitTime(layers.Layer):
    """[B * T, ...] -> [B, T, ...]."""

    def __init__(self, frames, **kwargs):
        super().__init__(**kwargs)
        self.frames = frames

    def call(self, x):
        shape = ops.shape(x)
        return ops.reshape(x, (-1, self.frames, *shape[1:]))

    def compute_output_shape(self, input_shape):
        return (None, self.frames, *input_shape[1:])

    def get_config(self):
        return {**super().get_config(), "frames": self.frames}


def clip_graph(parts, config, frames):
    """The clip model's outputs for symbolic `frames` [B, T, H, W, 3] (static T)."""
    t = frames.shape[1]
    x = parts["normalize"](layers.Identity(dtype="float32")(frames))
    if config.temporal:
        x = FrameDiff(config.diff_scale, config.diff_clip, name="frame_diff")(x)
    s4, s8, s16 = parts["frames"](MergeTime()(x))
    if config.temporal:
        seq = SplitTime(t)(s16)
        state = ops.tile(seq[:, 0, ..., :1] * 0.0, (1, 1, 1, config.state_channels))  # the zero start state
        states = []
        for i in range(t):
            state = parts["gru"](seq[:, i], state)
            states.append(state)
        g16 = MergeTime()(ops.stack(states, axis=1))
    else:
        g16 = parts["g16"](s16)
    heat, sides = parts["head"]([s4, s8, g16])
    return {"heatmap": SplitTime(t, name="heatmap_clip")(heat), "sides": SplitTime(t, name="sides_clip")(sides)}


@keras.saving.register_keras_serializable("sora_tf")
class SoraDet(keras.Model):
    """Clip model: frames [B, T, H, W, 3] (any H, W multiples of 16) -> {"heatmap" [B, T, H/4,
    W/4, 1] logits, "sides" [B, T, H/4, W/4, 4]}; `decode` turns maps into boxes; `stream` is
    the streaming form."""

    def __init__(self, config, **kwargs):
        config = config if isinstance(config, Config) else from_dict(Config, config)
        config.validate()
        # === Layers ===
        parts = {"normalize": pixel_normalization(config.pixel_mean, config.pixel_std),
                 "frames": frame_net(config), "head": head_net(config)}
        if config.temporal:
            parts["gru"] = ConvGRU(config.state_channels, name="gru")
        else:
            parts["g16"] = layers.Conv2D(config.state_channels, 3, padding="same", activation="relu", name="g16")
        # === Functional Model ===
        frames = keras.Input((config.num_frames, None, None, 3), name="frames")
        super().__init__(inputs=frames, outputs=clip_graph(parts, config, frames), **kwargs)
        # === Config ===
        self.config = config
        self.parts = parts

    def get_config(self):
        return {"config": dataclasses.asdict(self.config), "name": self.name, "trainable": self.trainable}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    # === Export forms (sora_tf/export/detect.py asks the model for them) ===
    def stream_state_shapes(self, size=None):
        return stream_state_shapes(self.config, size)

    def init_states(self, batch=1, size=None):
        return {k: np.zeros((batch, *v), np.float32) for k, v in self.stream_state_shapes(size).items()}

    def stream(self, batch=None, size=None):
        return stream_model(self, batch, size)


def build(config):
    return SoraDet(config, name="sora_det")


def stream_state_shapes(config, size=None):
    """{name: shape without batch}: `state_prev` (the previous frame, pixels) and `state_started`
    (0 before the first frame, so its difference is zero), `state_h` (the GRU's state). All-zero
    is the start state. The single-frame model has no state."""
    h, w = size or config.size
    if not config.temporal:
        return {}
    return {"state_prev": (h, w, 3), "state_started": (1,), "state_h": (h // 16, w // 16, config.state_channels)}


def decode(heatmap, sides, max_detections, height, width):
    """Maps of frames [N, h, w, 1] logits and [N, h, w, 4] -> boxes [N, K, 4] (x1, y1, x2, y2 in
    input pixels, clipped to the frame) and scores [N, K], best first: the top K local maxima
    (3x3) of the heatmap, each with the box its cell predicts."""
    heat = ops.sigmoid(heatmap)
    peaks = heat * ops.cast(ops.equal(heat, ops.max_pool(heat, 3, 1, padding="same")), heat.dtype)
    h, w = heatmap.shape[1], heatmap.shape[2]
    scores, index = ops.top_k(ops.reshape(peaks, (-1, h * w)), max_detections)
    d = ops.take_along_axis(ops.reshape(sides, (-1, h * w, 4)), ops.expand_dims(index, -1), axis=1)
    cx = (ops.cast(index % w, "float32") + 0.5) * STRIDE
    cy = (ops.cast(index // w, "float32") + 0.5) * STRIDE
    boxes = ops.stack([ops.clip(cx - d[..., 0], 0, width), ops.clip(cy - d[..., 1], 0, height),
                       ops.clip(cx + d[..., 2], 0, width), ops.clip(cy + d[..., 3], 0, height)], axis=-1)
    return boxes, scores


class DecodeBoxes(layers.Layer):
    """`decode` as a layer, so that its ops carry its name in a TFLite graph: full int8 keeps
    them in float (`sora_tf.export.tflite.int8_keeping_float`), as box corners need finer steps
    than the frame's width over 256."""

    def __init__(self, max_detections, height, width, **kwargs):
        super().__init__(**kwargs)
        self.k, self.height, self.width = max_detections, height, width

    def call(self, heatmap, sides):
        return decode(heatmap, sides, self.k, self.height, self.width)


def stream_model(model, batch=None, size=None):
    """One frame [B, H, W, 3] in [0, 255] and the `state_*` tensors -> `boxes` [B, K, 4], `scores`
    [B, K] and the new `state_*`, sharing `model`'s layers. Fed a clip's frames one by one from
    the zero state, it gives the clip model's detections frame by frame."""
    config, parts = model.config, model.parts
    h, w = size or config.size
    shapes = stream_state_shapes(config, (h, w))
    frame = keras.Input((h, w, 3), batch_size=batch, name="frame")
    state = {k: keras.Input(v, batch_size=batch, name=k) for k, v in shapes.items()}
    frame_f32 = layers.Identity(dtype="float32")(frame)
    normalize = pixel_normalization(config.pixel_mean, config.pixel_std)  # fixed: built for 4-D here
    new_state = {}
    if config.temporal:
        # Previous and current frame through one tensor, so int8 scales both alike (see sora_cls).
        pair = ops.concatenate([state["state_prev"], frame_f32], axis=0)
        pair_n = normalize(pair)
        k_previous, kx = ops.split((config.diff_scale / config.diff_clip) * pair_n, 2, axis=0)
        diff = state["state_started"][:, :, None, None] * clipped_difference(kx, k_previous, config.diff_clip)
        x = ops.concatenate([ops.split(pair_n, 2, axis=0)[1], diff], axis=-1)
        new_state["state_prev"] = ops.split(pair, 2, axis=0)[1]
        new_state["state_started"] = ops.ones_like(state["state_started"])
    else:
        x = normalize(frame_f32)
    s4, s8, s16 = parts["frames"](x)
    if config.temporal:
        g16 = parts["gru"](s16, state["state_h"])
        new_state["state_h"] = g16
    else:
        g16 = parts["g16"](s16)
    heat, sides = parts["head"]([s4, s8, g16])
    boxes, scores = DecodeBoxes(config.max_detections, h, w, name="decode_boxes", dtype="float32")(heat, sides)
    return keras.Model({"frame": frame, **state}, {"boxes": boxes, "scores": scores, **new_state},
                       name=f"{model.name}_stream")
