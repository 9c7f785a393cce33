"""Layers and functions of sora_vaegan that no other model uses: camera shifts, the
reconstruction weights, where a clip moves, moving a latent, and the loss terms."""
import keras
import numpy as np
from keras import layers, ops


@keras.saving.register_keras_serializable("sora_tf")
class CameraShifts(layers.Layer):
    """Frames [B, T, S, S, C] -> [B, T, 2]: each frame's whole-frame shift (x, y) in pixels against
    the middle frame, by block matching: the mean squared difference of the blurred grey frames at
    every whole-pixel shift within +-`radius`, its minimum refined to a fraction of a pixel by a
    parabola through its neighbours. The middle frame's shift is 0. A frame that moved by (x, y)
    holds at p + (x, y) what the middle frame holds at p.

    Only the border that no shift reaches is left out of the comparison, so a moving object
    counts by its area: where it covers most of the frame, its motion is read as the camera's
    (then the frame codes carry the rest, as they do with no shift at all).
    """

    def __init__(self, radius=4, **kwargs):
        super().__init__(**kwargs)
        self.radius = radius

    def call(self, frames):
        t, h, w = frames.shape[1], frames.shape[2], frames.shape[3]
        grey = ops.mean(ops.cast(frames, "float32"), axis=-1, keepdims=True)
        grey = ops.average_pool(ops.reshape(grey, (-1, h, w, 1)), 3, strides=1, padding="same")
        grey = ops.reshape(grey, (-1, t, h, w))
        m, r = self.radius + 1, self.radius
        middle = grey[:, t // 2:t // 2 + 1, m:h - m, m:w - m]
        # cost[b, t, i, j]: frame t shifted by (j, i) against the middle frame, i, j in [-m, m]
        cost = ops.stack([ops.stack([
            ops.mean(ops.square(grey[:, :, m + i:h - m + i, m + j:w - m + j] - middle), axis=(2, 3))
            for j in range(-m, m + 1)], axis=-1) for i in range(-m, m + 1)], axis=-2)
        inner = cost[..., 1:-1, 1:-1]  # the whole-pixel minimum lies within +-radius
        # Where the minimum is (shared between ties; argmin and one_hot are not TFLite builtins here)
        pick = ops.cast(inner <= ops.min(inner, axis=(-2, -1), keepdims=True), "float32")
        pick = pick / ops.sum(pick, axis=(-2, -1), keepdims=True)

        def at(part):
            return ops.sum(pick * part, axis=(-2, -1))
        offsets = ops.arange(-r, r + 1, dtype="float32")
        centre = at(inner)

        def refined(whole, before, after):
            curve = before - 2.0 * centre + after
            return whole + ops.clip(0.5 * (before - after) / ops.maximum(curve, 1e-6), -0.5, 0.5)
        x = refined(at(offsets[None, :]), at(cost[..., 1:-1, :-2]), at(cost[..., 1:-1, 2:]))
        y = refined(at(offsets[:, None]), at(cost[..., :-2, 1:-1]), at(cost[..., 2:, 1:-1]))
        return ops.stop_gradient(ops.stack([x, y], axis=-1))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[1], 2)

    def get_config(self):
        return {**super().get_config(), "radius": self.radius}


@keras.saving.register_keras_serializable("sora_tf")
class ShiftFrames(layers.Layer):
    """(frames [B, T, S, S, C], shifts [B, T, 2]) -> each frame moved by its shift (x, y) in
    pixels, held to +-(`radius` + 1): out(p) = frame(p - shift), bilinear, the border mirrored.
    Written as a sum of whole-pixel moves weighted by a tent (pad, slice, multiply, add), which
    TFLite runs as builtins."""

    def __init__(self, radius=4, **kwargs):
        super().__init__(**kwargs)
        self.radius = radius

    def call(self, frames, shifts):
        t, h, w, ch = frames.shape[1:]
        p = self.radius + 1
        x = ops.reshape(frames, (-1, h, w, ch))
        s = ops.clip(ops.reshape(ops.cast(shifts, "float32"), (-1, 2)), -float(p), float(p))
        k = ops.arange(-p, p + 1, dtype="float32")
        wx, wy = (ops.cast(ops.relu(1.0 - ops.abs(s[:, i:i + 1] - k[None])), x.dtype) for i in (0, 1))
        x = ops.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), mode="symmetric")
        x = sum(wx[:, i, None, None, None] * x[:, :, p - d:p - d + w] for i, d in enumerate(range(-p, p + 1)))
        x = sum(wy[:, i, None, None, None] * x[:, p - d:p - d + h] for i, d in enumerate(range(-p, p + 1)))
        return ops.reshape(x, (-1, t, h, w, ch))

    def compute_output_shape(self, frames_shape, shifts_shape=None):
        return frames_shape

    def get_config(self):
        return {**super().get_config(), "radius": self.radius}


def change_weights(x, motion_weight):
    """[B, T, S, S, 1] weights of each pixel of clips `x` [B, T, S, S, 3] in [0, 1] for the
    reconstruction error: 1 + motion_weight * min(|x_t - the clip's mean frame| / 0.1, 1), the
    channels' mean (Config.motion_weight)."""
    change = ops.mean(ops.abs(x - ops.mean(x, axis=1, keepdims=True)), axis=-1, keepdims=True)
    return 1.0 + motion_weight * ops.minimum(change / 0.1, 1.0)


def motion_centres(frames, grid):
    """Where each clip of `frames` [N, T, S, S, 3] moves most: [N, 2] (row, column) in cells of a
    grid x grid over the frame, the centroid of each cell's mean absolute frame difference less
    the clip's median cell, squared (a shaking camera and sensor noise move every cell a little,
    an object a lot). The middle where nothing moves."""
    x = np.asarray(frames, np.float32)
    energy = np.abs(np.diff(x, axis=1)).mean(axis=(1, -1))  # [N, S, S]
    n, s = energy.shape[:2]
    k = s // grid
    energy = energy[:, :grid * k, :grid * k].reshape(n, grid, k, grid, k).mean(axis=(2, 4))
    energy = np.square(np.maximum(energy - np.median(energy, axis=(1, 2), keepdims=True), 0.0))
    total = energy.sum(axis=(1, 2))
    weight = energy / np.maximum(total, 1e-12)[:, None, None]
    rows, cols = np.mgrid[0:grid, 0:grid]
    centres = np.stack([(weight * rows).sum((1, 2)), (weight * cols).sum((1, 2))], 1)
    centres[total <= 0] = (grid - 1) / 2
    return centres


def roll_latent(config, z, dy, dx):
    """Latents `z` [B, D] with the content grid and the frame codes moved by (dy, dx) frame-grid
    cells (int [B] each), wrapping round, as np.roll does; motion and camera shifts unchanged.
    Written as products with one-hot matrices, so that it runs in graphs and exported signatures."""
    g, f, t, part = config.grid, config.frame_grid, config.num_frames, config.parts
    z = ops.convert_to_tensor(z, "float32")

    def moves(side, step, d):  # [B, side, side]: row i takes row (i - d * step) mod side
        return ops.one_hot((ops.arange(side)[None, :] - ops.cast(d, "int32")[:, None] * step) % side, side)
    r = g // f
    content = ops.reshape(z[:, part["content"]], (-1, g, g, config.latent_channels))
    content = ops.einsum("byk,bkxc->byxc", moves(g, r, dy), content)
    content = ops.einsum("bxk,bykc->byxc", moves(g, r, dx), content)
    frames = ops.reshape(z[:, part["frames"]], (-1, t, f, f, config.frame_channels))
    frames = ops.einsum("byk,btkxc->btyxc", moves(f, 1, dy), frames)
    frames = ops.einsum("bxk,btykc->btyxc", moves(f, 1, dx), frames)
    return ops.concatenate([ops.reshape(content, (-1, config.content_size)),
                            ops.reshape(frames, (-1, config.frames_size)), z[:, part["frames"].stop:]], axis=-1)


def bce(logits, target):
    return ops.mean(ops.binary_crossentropy(ops.full_like(logits, target), logits, from_logits=True))


def normal_cdf(x):
    return 0.5 * (1.0 + ops.erf(x / np.sqrt(2.0)))


def kl_per_clip(z_mean, z_log_var):
    """KL(q(z|x) || N(0, I)) in nats per clip: [B]."""
    kl = 0.5 * (ops.exp(z_log_var) + ops.square(z_mean) - 1.0 - z_log_var)
    return ops.sum(ops.reshape(kl, (ops.shape(kl)[0], -1)), axis=1)

