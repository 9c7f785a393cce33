"""Clip-consistent augmentation: one random draw per clip, applied to every frame of it.

Written with Keras ops rather than a chain of Keras image layers, because of cost: the chain
(RandomZoom, RandomTranslation, RandomRotation, RandomFlip on frames stacked as channels, then
RandomColorJitter, whose saturation and hue go through HSV) warped every clip three times and
converted colour spaces, and took about a third of each training step on two CPU cores (see
BENCHMARKS.md). Here the whole geometry is one affine warp per clip (random resized crop = zoom
+ translation, rotation, horizontal flip; `keras.ops.image.affine_transform`) and the whole
colour jitter is one 3x3 matrix plus offset per clip (saturation and hue are a scale and a
rotation of the chroma plane in YIQ space; brightness and contrast are affine). Gaussian noise
is per pixel by nature. Everything is batched in the training graph (on the accelerator when
there is one), and with training=False the layer is the identity: eval clips are never
augmented.
"""
import math

import keras
from keras import layers, ops

# RGB -> YIQ and back: Y is luma, (I, Q) the chroma plane that hue rotates and saturation scales.
_YIQ = ((0.299, 0.587, 0.114), (0.596, -0.274, -0.322), (0.211, -0.523, 0.312))
_RGB = ((1.0, 0.956, 0.621), (1.0, -0.272, -0.647), (1.0, -1.106, 1.703))


@keras.saving.register_keras_serializable("sora_tf")
class ClipAugment(layers.Layer):
    """Augments float clips [B, T, H, W, 3] in [0, 255]; identity unless training.

    zoom: crop up to this fraction away (then resized back); translate: shift up to this fraction
    of the side; rotation_deg: +-degrees; warp_fraction: the share of clips that get those three
    (the rest keep their pixels: a bilinear warp smooths a clip, and a model that only ever saw
    smoothed clips reads a sharp clip's noise as motion); flip: horizontal, half the clips;
    brightness: +-fraction of 255; contrast and saturation: factor in 1 +- value; hue: +-fraction
    of a full turn; noise_std: Gaussian pixel noise in 0..255 units.
    """

    def __init__(self, zoom=0.25, translate=0.1, rotation_deg=8.0, flip=True, brightness=0.2,
                 contrast=0.2, saturation=0.3, hue=0.03, noise_std=4.0, warp_fraction=1.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.settings = dict(zoom=zoom, translate=translate, rotation_deg=rotation_deg, flip=flip,
                             warp_fraction=warp_fraction,
                             brightness=brightness, contrast=contrast, saturation=saturation,
                             hue=hue, noise_std=noise_std, seed=seed)
        self.seed_generator = keras.random.SeedGenerator(seed)

    def _uniform(self, b, bound):
        return keras.random.uniform((b,), -bound, bound, seed=self.seed_generator)

    def _geometry(self, x, b, h, w):
        """One affine warp per clip: frames stacked as channels, [B, H, W, T*3]."""
        s = self.settings
        scale = 1.0 - keras.random.uniform((b,), 0.0, s["zoom"], seed=self.seed_generator)
        angle = self._uniform(b, s["rotation_deg"] * math.pi / 180.0)
        tx, ty = self._uniform(b, s["translate"] * w), self._uniform(b, s["translate"] * h)
        if s["warp_fraction"] < 1:  # the others: the identity; at 1 no draw, so earlier runs repeat
            warp = ops.cast(keras.random.uniform((b,), seed=self.seed_generator) < s["warp_fraction"], "float32")
            scale, angle, tx, ty = 1.0 + warp * (scale - 1.0), warp * angle, warp * tx, warp * ty
        flip = ops.ones((b,))
        if s["flip"]:
            flip = ops.where(keras.random.uniform((b,), seed=self.seed_generator) < 0.5, -1.0, 1.0)
        # Output pixel (x, y) samples input scale * R(angle) * diag(flip, 1) * (x - c) + c + t.
        cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
        cos, sin = ops.cos(angle) * scale, ops.sin(angle) * scale
        a0, a1, b0, b1 = cos * flip, -sin, sin * flip, cos
        transform = ops.stack([a0, a1, cx + tx - a0 * cx - a1 * cy,
                               b0, b1, cy + ty - b0 * cx - b1 * cy,
                               ops.zeros((b,)), ops.zeros((b,))], axis=1)
        return ops.image.affine_transform(x, transform, interpolation="bilinear", fill_mode="reflect")

    def _colour(self, x, b):
        """One 3x3 colour matrix and offset per clip, on [B, T, H, W, 3]."""
        s = self.settings
        hue = self._uniform(b, s["hue"] * 2 * math.pi)
        sat = 1.0 + self._uniform(b, s["saturation"])
        contrast = 1.0 + self._uniform(b, s["contrast"])
        brightness = self._uniform(b, s["brightness"] * 255.0)
        zero, one = ops.zeros((b,)), ops.ones((b,))
        chroma = ops.stack([ops.stack([one, zero, zero], 1),
                            ops.stack([zero, sat * ops.cos(hue), -sat * ops.sin(hue)], 1),
                            ops.stack([zero, sat * ops.sin(hue), sat * ops.cos(hue)], 1)], 1)
        matrix = ops.einsum("ij,bjk,kl->bil", ops.convert_to_tensor(_RGB), chroma, ops.convert_to_tensor(_YIQ))
        mean = ops.mean(x, axis=(1, 2, 3), keepdims=True)  # per clip and channel
        expand = contrast[:, None, None, None, None]
        return (ops.einsum("bthwc,bdc->bthwd", x - mean, matrix) * expand
                + ops.einsum("bthwc,bdc->bthwd", mean, matrix) + brightness[:, None, None, None, None])

    def call(self, clips, training=False):
        clips = ops.cast(clips, self.compute_dtype)
        if not training:
            return clips
        s = self.settings
        b, t, h, w, c = (ops.shape(clips)[0], *clips.shape[1:])
        x = clips
        if s["zoom"] or s["translate"] or s["rotation_deg"] or s["flip"]:
            x = ops.reshape(ops.transpose(x, (0, 2, 3, 1, 4)), (b, h, w, t * c))
            x = ops.transpose(ops.reshape(self._geometry(x, b, h, w), (b, h, w, t, c)), (0, 3, 1, 2, 4))
        if s["brightness"] or s["contrast"] or s["saturation"] or s["hue"]:
            x = self._colour(x, b)
        if s["noise_std"]:
            x = x + keras.random.normal(ops.shape(x), stddev=s["noise_std"], seed=self.seed_generator)
        return ops.clip(x, 0.0, 255.0)

    def build(self, input_shape):
        self.built = True

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), **self.settings}
