"""sora_cls: the Sora representation network.

A per-frame CNN runs over T frames (`TimeDistributed`), an LSTM or GRU reads the sequence, and
its last state becomes a dense clip `embedding`; a softmax head classifies it. Inputs are frames
in [0, 255] (uint8 or float) of shape [B, T, H, W, 3]; normalisation is part of the model, so
what was trained is what gets exported.

Run it: `make train MODEL=sora_cls`, or `python -m sora_tf train --model sora_cls --preset tiny`.
"""
import dataclasses

import keras
from keras import layers, ops

from sora_tf.config import from_dict
from sora_tf.models.blocks import frame_cnn, pixel_normalization


@dataclasses.dataclass(frozen=True)
class Config:
    """Defaults train on the generated data: `python -m sora_tf train --model sora_cls`."""

    # Input
    num_frames: int = 16
    image_size: int = 64
    pixel_mean: tuple = (0.5, 0.5, 0.5)
    pixel_std: tuple = (0.25, 0.25, 0.25)
    # Model
    num_classes: int = 7
    cnn_widths: tuple = (24, 48, 64, 96)
    frame_features: int = 128
    rnn: str = "lstm"
    rnn_units: int = 128
    rnn_layers: int = 1
    embedding_dim: int = 128
    dropout: float = 0.2
    frame_diff: bool = True  # feed each frame with its difference from the previous one
    unroll: bool = False  # export sets it for a fixed-T builtins-only TFLite graph
    # Training
    epochs: int = 30
    batch_size: int = 16
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    val_fraction: float = 0.2
    seed: int = 0
    max_stride: int = 2
    patience: int = 10
    # Augmentation (one draw per clip). Mild by default: on the generated data, strong
    # geometry + colour jitter slowed learning about twofold in a 6-epoch A/B.
    aug_zoom: float = 0.1
    aug_translate: float = 0.05
    aug_rotation_deg: float = 3.0
    aug_flip: bool = True
    aug_brightness: float = 0.15
    aug_contrast: float = 0.15
    aug_saturation: float = 0.2
    aug_hue: float = 0.0
    aug_noise_std: float = 2.0

    @classmethod
    def tiny(cls):
        """Seconds on two CPU cores: `python -m sora_tf train --model sora_cls --preset tiny`."""
        return cls(num_frames=8, image_size=32, cnn_widths=(8, 16, 16), frame_features=32,
                   rnn_units=32, embedding_dim=32, epochs=2, batch_size=8, patience=2)

    def validate(self):
        if self.rnn not in ("lstm", "gru"):
            raise ValueError(f"rnn must be 'lstm' or 'gru', got {self.rnn!r}")
        for key in ("num_frames", "image_size", "num_classes", "rnn_units", "rnn_layers",
                    "embedding_dim", "epochs", "batch_size", "max_stride"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.image_size % 2 ** len(self.cnn_widths):
            raise ValueError(f"image_size {self.image_size} must be divisible by 2**{len(self.cnn_widths)}")
        if len(self.pixel_mean) != 3 or len(self.pixel_std) != 3:
            raise ValueError("pixel_mean and pixel_std need 3 values (R, G, B)")


@keras.saving.register_keras_serializable("sora_tf")
class FrameDiff(layers.Layer):
    """[B, T, H, W, C] -> [B, T, H, W, 2C]: each frame and its change since the previous frame.

    Motion is what tells the classes apart (and what matters for fights); a difference image
    makes it explicit to the per-frame CNN. The first frame's difference is zero, which is also
    the streaming model's start state.
    """

    def call(self, x):
        previous = ops.concatenate([x[:, :1], x[:, :-1]], axis=1)
        return ops.concatenate([x, x - previous], axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 2 * input_shape[-1])


def rnn_layer(config, return_sequences, name):
    cls = layers.LSTM if config.rnn == "lstm" else layers.GRU
    return cls(config.rnn_units, return_sequences=return_sequences, unroll=config.unroll, name=name)


@keras.saving.register_keras_serializable("sora_tf")
class SoraCls(keras.Model):
    """Outputs a dict: `probabilities` [B, classes] and `embedding` [B, embedding_dim]."""

    def __init__(self, config, **kwargs):
        config = config if isinstance(config, Config) else from_dict(Config, config)
        config.validate()
        t, s = config.num_frames, config.image_size
        # === Layers ===
        normalize = pixel_normalization(config.pixel_mean, config.pixel_std)
        channels = 6 if config.frame_diff else 3
        cnn = frame_cnn((s, s, channels), config.cnn_widths, config.frame_features)
        rnns = [rnn_layer(config, i < config.rnn_layers - 1, f"rnn{i}") for i in range(config.rnn_layers)]
        # === Functional Model ===
        frames = keras.Input((t, s, s, 3), name="frames")
        x = normalize(layers.Identity(name="to_float", dtype="float32")(frames))
        if config.frame_diff:
            x = FrameDiff(name="frame_diff")(x)
        x = layers.TimeDistributed(cnn, name="frame_features")(x)
        for rnn in rnns:
            x = rnn(x)
        embedding = layers.Dense(config.embedding_dim, name="embedding")(x)
        logits = layers.Dense(config.num_classes, name="logits")(
            layers.Dropout(config.dropout, name="head_dropout")(embedding))
        probabilities = layers.Softmax(name="probabilities", dtype="float32")(logits)
        super().__init__(inputs=frames, outputs={"probabilities": probabilities, "embedding": embedding},
                         **kwargs)
        # === Config ===
        self.config = config

    def get_config(self):
        return {"config": dataclasses.asdict(self.config), "name": self.name, "trainable": self.trainable}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def build(config):
    return SoraCls(config, name="sora_cls")
