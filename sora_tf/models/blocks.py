"""Building blocks shared across the zoo: the per-frame CNN family, frame differences, one
batched call over time, fixed input normalisation, and pixels back to uint8."""
import keras
import numpy as np
from keras import layers, ops


def conv_stages(x, widths, norm=True, prefix=""):
    """Stride-2 3x3 conv stages (conv, optional BatchNorm, ReLU): each halves H and W."""
    for i, width in enumerate(widths):
        x = layers.Conv2D(width, 3, strides=2, padding="same", use_bias=not norm, name=f"{prefix}conv{i}")(x)
        if norm:
            x = layers.BatchNormalization(name=f"{prefix}bn{i}")(x)
        x = layers.ReLU(name=f"{prefix}relu{i}")(x)
    return x


def frame_cnn(input_shape, widths, feature_dim, name="frame_cnn", norm=True):
    """A per-frame CNN as a named `keras.Model`: [H, W, C] -> [feature_dim].

    Stride-2 stages down to a small grid, then Flatten + Dense rather than global pooling:
    pooling would throw away where things are, and motion direction is a change of where
    (global max pooling: -9 points on two folds of fight_surv, docs/sora_cls.md).
    """
    inputs = keras.Input(input_shape, name="frame")
    x = layers.Flatten(name="flatten")(conv_stages(inputs, widths, norm))
    x = layers.Dense(feature_dim, activation="relu", name="features")(x)
    return keras.Model(inputs, x, name=name)


# `backbone=` names: keras.applications networks suited to phones, built without their classifier.
BACKBONES = {
    "mobilenet_v3_small": "MobileNetV3Small",
    "mobilenet_v3_large": "MobileNetV3Large",
    "efficientnet_b0": "EfficientNetB0",
}


def backbone_cnn(input_shape, backbone, weights, feature_dim, mean, std, name="frame_cnn"):
    """A keras.applications network as the per-frame CNN: [H, W, C] normalised frames (C = 3, or 6
    with frame differences) -> [feature_dim].

    These networks take RGB pixels in [0, 255] (their preprocessing is inside them), so a 1x1
    convolution first maps the C channels to 3, initialised to undo the pixel normalisation on
    the RGB channels and to ignore the differences: at the start a pretrained backbone sees the
    frame as it was trained to, and training can let motion in. `weights`: None (random),
    "imagenet" (Keras downloads them), or a path to a weights file of that network without its top.
    """
    if backbone not in BACKBONES:
        raise ValueError(f"backbone must be one of {sorted(BACKBONES)}, got {backbone!r}")
    net = getattr(keras.applications, BACKBONES[backbone])
    kwargs = {"include_preprocessing": True} if backbone.startswith("mobilenet") else {}
    try:
        base = net(input_shape=(*input_shape[:2], 3), include_top=False, weights=weights, pooling="avg", **kwargs)
    except (ValueError, OSError) as e:
        raise ValueError(f"backbone {backbone} with weights {weights!r}: {e}") from None
    for layer in base._flatten_layers():
        if isinstance(layer, layers.BatchNormalization):  # 0.999 in these: from random weights the
            layer.momentum = 0.99                          # statistics must move, ten times faster
    kernel = np.zeros((1, 1, input_shape[-1], 3), np.float32)
    kernel[0, 0, np.arange(3), np.arange(3)] = 255.0 * np.asarray(std, np.float32)
    inputs = keras.Input(input_shape, name="frame")
    x = layers.Conv2D(3, 1, name="to_pixels", kernel_initializer=keras.initializers.Constant(kernel),
                      bias_initializer=keras.initializers.Constant(255.0 * np.asarray(mean, np.float32)))(inputs)
    x = base(x)
    x = layers.Dense(feature_dim, activation="relu", name="features")(x)
    return keras.Model(inputs, x, name=name)


def upsampling_cnn(input_shape, widths, channels, name="frame_decoder"):
    """The mirror image: [h, w, C] -> [h * 2^n, w * 2^n, channels] in [0, 1].

    Each stage is nearest-neighbour x2 upsampling then a 3x3 conv (rather than a transposed
    conv, whose uneven overlap paints a checkerboard) and ReLU; a final 3x3 conv and a sigmoid
    give pixels. No BatchNorm: a generator's batches mix reconstructions and prior samples, and
    moving statistics of that mixture misdraw both at inference (held-out PSNR fell from 17.2
    to 15.6 dB in epoch 2 while training PSNR rose).
    """
    inputs = keras.Input(input_shape, name="features")
    x = inputs
    for i, width in enumerate(widths):
        x = layers.UpSampling2D(2, name=f"up{i}")(x)
        x = layers.Conv2D(width, 3, padding="same", activation="relu", name=f"conv{i}")(x)
    x = layers.Conv2D(channels, 3, padding="same", name="pixels")(x)
    x = layers.Activation("sigmoid", dtype="float32", name="sigmoid")(x)
    return keras.Model(inputs, x, name=name)


def pixel_normalization(mean, std, name="normalize"):
    """Fixed per-channel (x - mean) / std on pixels in [0, 255]; mean/std given in [0, 1] units."""
    return layers.Normalization(
        mean=[255.0 * m for m in mean], variance=[(255.0 * s) ** 2 for s in std], name=name)


def to_uint8(frames):
    """Frames in [0, 1] -> uint8 pixels, rounded: numpy in, numpy out; a tensor in (as in an
    exported signature's graph), a tensor out."""
    pixels = ops.cast(ops.clip(ops.round(ops.convert_to_tensor(frames, "float32") * 255.0), 0, 255), "uint8")
    return np.asarray(pixels) if isinstance(frames, np.ndarray) else pixels


def clipped_difference(kx, k_previous, clip):
    """clip(scale * (x - previous), -clip, clip) from kx = k x and k_previous = k previous, with
    k = scale / clip, written as clip * clip(kx - k_previous, -1, 1): the same numbers, arranged
    so that int8 quantises the difference over the band it keeps and a still pixel's difference
    is exactly zero (both operands come from one scaled tensor). Measurements: docs/sora_cls.md.
    """
    return clip * ops.clip(kx - k_previous, -1.0, 1.0)


SOBEL = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float32) / 8.0


def normal_flow(current, previous, eps=0.01, limit=2.0, gain=2.0):
    """[N, H, W, C] normalised frames -> [N, H, W, 2]: the motion along the grey image's gradient
    from `previous` to `current`, -I_t grad(I) / (|grad(I)|^2 + eps), in pixels, clipped to
    +-`limit`, times `gain`. Contrast cancels out of it: a faint edge and a strong one moving
    alike give alike, where a frame difference grows with the contrast (docs/sora_cls.md)."""
    grey, grey_previous = ops.mean(current, axis=-1, keepdims=True), ops.mean(previous, axis=-1, keepdims=True)
    kernel = np.stack([SOBEL, SOBEL.T], -1)[:, :, None, :]  # d/dx and d/dy
    grad = ops.conv(0.5 * (grey + grey_previous), kernel, padding="same")
    flow = -(grey - grey_previous) * grad / (ops.sum(grad * grad, axis=-1, keepdims=True) + eps)
    return gain * ops.clip(flow, -limit, limit)


@keras.saving.register_keras_serializable("sora_tf")
class FrameDiff(layers.Layer):
    """[B, T, H, W, C] -> [B, T, H, W, 2C]: each frame and its change since the previous frame
    (with `keep_frame=False`, [B, T, H, W, C]: the change only).

    Motion is what tells the classes apart; a difference image makes it explicit to the
    per-frame CNN. The first frame's difference is zero, which is also the streaming model's
    start state. Differences are ~10x smaller than normalised frames, so they are scaled by
    `scale` (unscaled, training sat at chance for epochs) and clipped to +-`clip` (so that int8
    gives the frames enough levels). `with_flow`: two more channels, the `normal_flow`.
    Measurements: docs/sora_cls.md.
    """

    def __init__(self, scale=1.0, clip=4.0, keep_frame=True, with_flow=False, **kwargs):
        super().__init__(**kwargs)
        self.scale, self.clip, self.keep_frame, self.with_flow = scale, clip, keep_frame, with_flow

    def call(self, x):
        kx = (self.scale / self.clip) * x
        k_previous = ops.concatenate([kx[:, :1], kx[:, :-1]], axis=1)
        diff = clipped_difference(kx, k_previous, self.clip)
        if self.with_flow:
            frames = ops.reshape(x, (-1, *x.shape[2:]))
            previous = ops.reshape(ops.concatenate([x[:, :1], x[:, :-1]], axis=1), (-1, *x.shape[2:]))
            flow = ops.reshape(normal_flow(frames, previous), (-1, x.shape[1], *x.shape[2:4], 2))
            diff = ops.concatenate([diff, flow], axis=-1)
        return ops.concatenate([x, diff], axis=-1) if self.keep_frame else diff

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], (2 if self.keep_frame else 1) * input_shape[-1] + 2 * self.with_flow)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "clip": self.clip, "keep_frame": self.keep_frame,
                "with_flow": self.with_flow}


@keras.saving.register_keras_serializable("sora_tf")
class FrameTimeDistributed(layers.TimeDistributed):
    """`TimeDistributed` as one batched call: [B, T, ...] -> [B*T, ...] -> layer -> [B, T, ...].

    Keras 3's TimeDistributed loops over a static T in Python: T small convolutions instead of
    one, BatchNorm statistics per time step, and in TFLite T copies of every op.
    """

    def call(self, inputs, training=None, mask=None):
        frames = ops.reshape(inputs, (-1, *inputs.shape[2:]))
        features = self.layer(frames, training=training)
        return ops.reshape(features, (-1, inputs.shape[1], *features.shape[1:]))
