"""Building blocks shared across the zoo: the per-frame CNN family and fixed input normalisation."""
import keras
from keras import layers


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
