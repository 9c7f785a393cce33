"""Clip-consistent augmentation: one random draw per clip, applied to every frame of it.

Keras 3's image layers draw one transform per image. Two reshapes turn a clip into one image:
- geometry: [B, T, H, W, C] -> [B, H, W, T*C], frames stacked as channels, so RandomZoom,
  RandomTranslation (together a random resized crop), RandomRotation and RandomFlip move every
  frame the same way;
- colour: [B, T, H, W, C] -> [B, T*H, W, C], frames stacked vertically, so RandomColorJitter
  changes brightness, contrast, saturation and hue of the whole clip at once.
Gaussian noise is per pixel by nature. All of it is active only with training=True, so eval
clips are never augmented, and it runs batched in the training graph (on the accelerator
when there is one).
"""
import keras
from keras import layers, ops


@keras.saving.register_keras_serializable("sora_tf")
class ClipAugment(layers.Layer):
    """Augments float clips [B, T, H, W, 3] in [0, 255]; identity unless training."""

    def __init__(self, zoom=0.25, translate=0.1, rotation_deg=8.0, flip=True, brightness=0.2,
                 contrast=0.2, saturation=0.3, hue=0.03, noise_std=4.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.settings = dict(zoom=zoom, translate=translate, rotation_deg=rotation_deg, flip=flip,
                             brightness=brightness, contrast=contrast, saturation=saturation,
                             hue=hue, noise_std=noise_std, seed=seed)
        geometry = []
        if zoom:
            geometry.append(layers.RandomZoom((-zoom, 0.0), fill_mode="reflect", seed=seed))
        if translate:
            geometry.append(layers.RandomTranslation(translate, translate, fill_mode="reflect", seed=seed))
        if rotation_deg:
            geometry.append(layers.RandomRotation(rotation_deg / 360.0, fill_mode="reflect", seed=seed))
        if flip:
            geometry.append(layers.RandomFlip("horizontal", seed=seed))
        self.geometry = geometry
        self.colour = None
        if brightness or contrast or saturation or hue:
            self.colour = layers.RandomColorJitter(
                value_range=(0, 255), brightness_factor=brightness or None,
                contrast_factor=contrast or None,
                saturation_factor=(0.5 - saturation / 2, 0.5 + saturation / 2) if saturation else None,
                hue_factor=hue or None, seed=seed)
        # GaussianNoise wants a stddev in [0, 1]: it runs on pixels scaled to [0, 1].
        self.noise = layers.GaussianNoise(noise_std / 255.0, seed=seed) if noise_std else None

    def call(self, clips, training=False):
        clips = ops.cast(clips, self.compute_dtype)
        if not training:
            return clips
        b, t, h, w, c = (ops.shape(clips)[0], *clips.shape[1:])
        x = ops.reshape(ops.transpose(clips, (0, 2, 3, 1, 4)), (b, h, w, t * c))
        for layer in self.geometry:
            x = layer(x, training=True)
        x = ops.transpose(ops.reshape(x, (b, h, w, t, c)), (0, 3, 1, 2, 4))
        if self.colour is not None:
            x = ops.reshape(self.colour(ops.reshape(x, (b, t * h, w, c)), training=True), (b, t, h, w, c))
        if self.noise is not None:
            x = self.noise(x / 255.0, training=True) * 255.0
        return ops.clip(x, 0.0, 255.0)

    def build(self, input_shape):
        self.built = True  # sub-layers are stateless apart from their seeds

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), **self.settings}
