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
    pooling would throw away where things are, and motion direction is a change of where.
    """
    inputs = keras.Input(input_shape, name="frame")
    x = layers.Flatten(name="flatten")(conv_stages(inputs, widths, norm))
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


@keras.saving.register_keras_serializable("sora_tf")
class FrameDiff(layers.Layer):
    """[B, T, H, W, C] -> [B, T, H, W, 2C]: each frame and its change since the previous frame.

    Motion is what tells the classes apart; a difference image makes it explicit to the
    per-frame CNN. The first frame's difference is zero, which is also the streaming model's
    start state. Differences are ~10x smaller than normalised frames, so they are scaled by
    `scale` (unscaled, training sat at chance for epochs) and clipped to +-`clip` (so that int8
    gives the frames enough levels). Measurements: docs/sora_cls.md.
    """

    def __init__(self, scale=1.0, clip=4.0, **kwargs):
        super().__init__(**kwargs)
        self.scale, self.clip = scale, clip

    def call(self, x):
        kx = (self.scale / self.clip) * x
        k_previous = ops.concatenate([kx[:, :1], kx[:, :-1]], axis=1)
        return ops.concatenate([x, clipped_difference(kx, k_previous, self.clip)], axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 2 * input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "clip": self.clip}


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
