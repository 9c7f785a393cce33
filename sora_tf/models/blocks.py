"""Building blocks shared across the zoo: the per-frame CNN and fixed input normalisation."""
import keras
from keras import layers


def frame_cnn(input_shape, widths, feature_dim, name="frame_cnn"):
    """A per-frame CNN as a named `keras.Model`: [H, W, C] -> [feature_dim].

    Stride-2 stages down to a small grid, then Flatten + Dense rather than global pooling:
    pooling would throw away where things are, and motion direction is a change of where.
    """
    inputs = keras.Input(input_shape, name="frame")
    x = inputs
    for i, width in enumerate(widths):
        x = layers.Conv2D(width, 3, strides=2, padding="same", use_bias=False, name=f"conv{i}")(x)
        x = layers.BatchNormalization(name=f"bn{i}")(x)
        x = layers.ReLU(name=f"relu{i}")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(feature_dim, activation="relu", name="features")(x)
    return keras.Model(inputs, x, name=name)


def pixel_normalization(mean, std, name="normalize"):
    """Fixed per-channel (x - mean) / std on pixels in [0, 255]; mean/std given in [0, 1] units."""
    return layers.Normalization(
        mean=[255.0 * m for m in mean], variance=[(255.0 * s) ** 2 for s in std], name=name)
