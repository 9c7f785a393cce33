"""sora_vaegan: a video VAE trained against a discriminator (VAE-GAN), class-conditional.

- `encoder`: frames [B, T, S, S, 3] in [0, 255] -> `z_mean`, `z_log_var` [B, D], one flat latent
  per clip in three parts, four with `max_shift`:
  - content, `latent_channels` numbers per cell of a g x g grid (g = S / 2^len(content_widths),
    32 at 64 px): stride-2 convs on the middle frame and on where the clip moves (the mean
    absolute frame difference);
  - frame codes, `frame_channels` numbers per cell of a coarser grid (S / 2^len(frame_widths),
    16 at 64 px) for every frame (with `max_shift`, coded with the camera's shift undone): where
    things are at each time;
  - motion, `motion_dim` numbers: the `sora_cls` frame CNN (frame and frame difference, the
    same stages and Dense, batched over time; it can initialise a `sora_cls`) and an LSTM;
  - with `max_shift` > 0, camera shifts, (x, y) per frame against the middle frame
    (`CameraShifts`: block matching within +-`max_shift` px, measured rather than learned).
  D = g * g * latent_channels + T * f * f * frame_channels + motion_dim (+ 2T): 8,200 at the
  defaults (8,216 with shifts), for 98,304 pixel values.
- `decoder`: latent [+ one-hot class] -> frames [B, T, S, S, 3] in [0, 1]; see `build_decoder`.
  With `max_shift`, it draws each frame still and then moves it by its camera shift (`ShiftFrames`).
- `discriminator`: the `sora_cls` network again (frame CNN without BatchNorm, which would mix
  real and generated batch statistics, then an LSTM) with a real/fake logit, an auxiliary
  class output and its features for feature matching.

Why content from one frame on a fine grid: the clips (generated and real) are mostly texture
that stays put, and replacing each 4x4 pixel block of held-out default clips by its mean
already costs 24.1 dB PSNR. The design before that encoded T frames per cell of a 16 x 16 grid
(an LSTM per cell): held-out PSNR 22.73 dB, every object erased.

Why frame codes: without them (content + motion vector only, the design before this one) the
decoder had to move the middle frame's object itself, and never learnt to: the judge (a
`sora_cls` trained on the same data) called reconstructions and class-conditional samples their
class at chance (1/7). Probes on the default data, the VAE alone for 700 steps on the eval views
of the 2,240 training clips (ad-hoc script, 2026-11-22), judge on 560 held-out clips:
- that design: 24.5 dB held-out PSNR, judge 0.143 on reconstructions and on samples;
- frame codes 4 x 8 x 8 per frame: 24.50 dB, 0.534, samples 0.589;
- frame codes 2 x 16 x 16 per frame (the default): 25.34 dB, 0.750, samples 0.696.
Why camera shifts: the default clips shake (a random walk held within +-2 px at 96 px, as a
hand-held camera does), and a shift of a textured scene by a fraction of a 4-pixel cell changes
every frame code. The decoder drew that as the whole texture changing, which the judge calls
`zoom`: on 280 new default clips (40 per class), reconstructions of `static` clips were named
`static` at 0.57 / 0.62 (VAE-GAN / VAE alone) with the shake and 1.0 / 1.0 without it, and no
`static` sample was ever named `static`. With the shift measured, undone for the frame codes and
redone by the decoder (`max_shift` 4): `static` reconstructions 0.85-0.94, `static` samples
0.28-0.50. But the judge had been calling the same flicker `zoom` in `zoom` clips too: their
reconstructions fell from 0.76-0.78 to 0.47-0.55 (called `static`), and the moving classes lost a
little, so the judge's figures came out lower. Probes, the VAE alone, 700 steps, one judge
(2026-11-22): shifts undone for every part of the encoder: held-out PSNR 26.16 dB, samples
named right 0.686, Frechet distance 5.37; whole-pixel shifts only (no blur from resampling):
26.10 dB, 0.646, 6.18; undone for the frame codes only (the content's "where it moves" and the
motion LSTM read the clip as filmed, as built): 26.18 dB, 0.714, 5.08. Without shifts, four
default runs' VAE alone read 25.75-25.83 dB. A default run with shifts (the VAE-GAN / the VAE
alone): 25.98 / 26.13 dB, samples 0.661 / 0.696, Frechet distance 8.07 / 7.52, against 0.707-0.714
and 4.93-7.35 without; so they are off by default.

Tried before and dropped, all aimed at teaching a decoder to move a drawn object: warping one
drawn layer with a learned flow (stayed under ~1 px in 12 epochs); one object layer moved by a
similarity transform from the motion LSTM (faint even when supervised by the true motion);
moving layers by softmax displacement kernels (CDNA, Finn et al. 2016), with a loss on
frame-to-frame differences and on real frames moved by the same kernels: 700 steps left the
kernels the same for every class and the predicted frames no better than the previous frame.

Measured on the designs before this one (and kept):
Training starts as a VAE alone for `gan_warmup` epochs, then the discriminator joins: trained
adversarially from the first step, the reconstruction stalled at 15.2 dB held-out PSNR for two
epochs, while the VAE alone reached 20.2 dB. The warm-up epochs are the `vae_only` twin's own
first epochs (see `sora_tf.train.run`), so the comparison costs no extra training. The GAN
terms are kept small: after the warm-up, adv_weight 0.02 and feature_weight 0.1 took held-out
PSNR from 21 to 14.2 dB in two epochs (the GAN terms were as large as the reconstruction
term); at 0.002 and 0.01 it rose from 21 to 22.9 dB over the same two epochs. A class
loss weight of 0.02 on samples (with L2 reconstruction, whose loss is ~10x smaller than L1's)
took it from 21.3 to 20.5 dB; so the default weights are all relative to L1 reconstruction.
In 5-epoch VAE-only A/Bs with cosine decay, L2 reached 22.75 dB and L1 22.56 dB, and 16 latent
channels per cell instead of 8 no better after 3 epochs (22.35 vs 22.39 dB).

Measured on the content and motion design (before frame codes): when the discriminator joins, the VAE's learning rate starts its
cosine again from the top. Going on from where the warm-up left it instead (the same default
run's GAN epochs again) kept held-out PSNR at 24.38 dB against 24.13, but the GAN then changed
the decoder too little: the Frechet distance of its reconstructions stayed at the VAE alone's
(63.74 against 63.72), where with the restart it fell to 18.84.

Loss, per step (a custom `train_step` inside `fit`, one optimizer per side):
  VAE:  recon (L1 or L2, each pixel weighted by how much it changes over the clip: motion_weight)
        + kl_weight * KL / pixels
        + adv_weight * non-saturating GAN loss + gen_class_weight * class loss on generated clips
        + feature_weight * feature matching (discriminator features of real vs reconstructed)
  D:    real/fake cross-entropy on real, reconstructed and prior-sampled clips
        + class_weight * class cross-entropy on real clips (when labels are known).
`gan=False` is the same architecture trained as a VAE alone, for comparison.

Run it: `make train MODEL=sora_vaegan`, or `python -m sora_tf train --model sora_vaegan --preset tiny`.
"""
import dataclasses

import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops

from sora_tf.config import from_dict
from sora_tf.models.blocks import frame_cnn, pixel_normalization, upsampling_cnn
from sora_tf.models.sora_cls import FrameDiff, FrameTimeDistributed

TASK = "generate"
SHIFT_SD = 0.05  # px: the camera shift's posterior spread (it is measured; see CameraShifts)


@dataclasses.dataclass(frozen=True)
class Config:
    """Defaults train on the generated data: `python -m sora_tf train --model sora_vaegan`."""

    # Input
    num_frames: int = 8
    image_size: int = 64
    pixel_mean: tuple = (0.5, 0.5, 0.5)
    pixel_std: tuple = (0.25, 0.25, 0.25)
    num_classes: int = 7
    conditional: bool = True  # decoder takes a class; off for unlabelled data
    # Encoder. Motion: the sora_cls frame CNN (same widths, so it can initialise one) and an LSTM.
    enc_widths: tuple = (24, 48, 64, 96)
    enc_features: int = 128
    diff_scale: float = 10.0
    diff_clip: float = 4.0
    cell_units: int = 64  # the encoder's LSTM, and the decoder's LSTM and convs
    motion_dim: int = 8  # the motion latent: one vector per clip
    # Content: stride-2 stages on the middle frame and where the clip moves, to latent_channels per cell
    content_widths: tuple = (32,)  # 64 px -> a 32 x 32 content grid
    latent_channels: int = 4
    # Decoder
    class_dim: int = 16
    dec_widths: tuple = (32,)  # undoes content_widths
    # Frames: stride-2 stages on every frame, to frame_channels per cell of a coarse grid (16 x 16 at 64 px)
    frame_widths: tuple = (16, 32)
    frame_channels: int = 2
    # Camera shift (off by default): each frame's whole-frame shift against the middle frame, found
    # by block matching within +-max_shift px (at the model's size), is 2 more latent numbers per
    # frame; the encoder codes the frames with it undone and the decoder draws them and moves them
    # by it. In a default run with 4: held-out PSNR 25.98 / 26.13 dB (VAE-GAN / VAE alone) and
    # `static` reconstructions named right 0.93 / 0.90, but samples named their class at 0.661 /
    # 0.696 and a Frechet distance of 8.07 / 7.52 (the judge-based bars are further off; module
    # docstring and README).
    max_shift: int = 0
    # Discriminator
    disc_widths: tuple = (24, 48, 64, 96)
    disc_features: int = 128
    disc_units: int = 64
    unroll: bool = False  # export sets it for builtins-only TFLite
    # Sampling: after training, a Gaussian is fitted to the training clips' posterior means (per
    # class mean, this many principal directions of the within-class spread, and a per-number
    # residual); `sample` and `generate` draw from it. 0: principal directions off.
    prior_components: int = 128
    # How a drawn clip's frame codes change over time: taken whole from one of this many training
    # clips of the class (their change about their own time mean, moved to mid-grid), on top of the
    # Gaussian's draw of everything else (see `fit_prior`). 0: the Gaussian draws the change too.
    prior_motions: int = 128
    # Fit that Gaussian to the clips moved so that where each moves most is mid-grid, and draw where
    # a clip happens apart, from where the class's training clips do (see `fit_prior`).
    prior_align: bool = True
    # Losses
    gan: bool = True  # False: the VAE alone
    gan_warmup: int = 3  # epochs of VAE alone (the vae_only twin's first ones) before the discriminator joins
    # (a GAN step costs ~2.2 VAE steps; on a fresh clone, 3 of 5 took 15m47s and 24.26 dB, 2 of 5 17m16s and 24.21)
    snapshot_epoch: int = 0  # > 0: also save epoch<k>.keras after k epochs (the warm-up hand-over)
    recon_loss: str = "l1"
    # Each pixel's reconstruction error weighs 1 + motion_weight * min(|x_t - time mean| / 0.1, 1)
    # (channel mean), over the weights' mean: the pixels that change over the clip (a moving
    # object is ~4% of a default frame) count for what they show. 0: plain L1/L2. The VAE alone,
    # one judge (README): at 10 held-out PSNR 26.03 dB, reconstructions named right 0.825, against
    # 25.78 dB and 0.773 at 0.
    motion_weight: float = 10.0
    kl_weight: float = 0.01  # on KL (nats) per pixel value
    # (the VAE alone, one default-data run each: at 0.05 held-out PSNR 24.85 dB, judge on
    # reconstructions 0.670, Frechet distance of samples 8.52 (prior refitted ad hoc); at 0.01
    # 25.74 dB, 0.789, 6.57; at 0.003 25.88 dB, 0.798, 6.99; samples named their class at 0.714
    # in all three; README for the commands)
    adv_weight: float = 0.002
    gen_class_weight: float = 0.002  # the discriminator's class loss on conditional samples, for the decoder
    feature_weight: float = 0.01
    class_weight: float = 1.0  # discriminator's class loss on real clips
    # Training
    epochs: int = 5  # over the default data's 400 clips per class: 700 steps
    # (at 4 with 2 of warm-up, held-out PSNR read 24.05 dB: the discriminator joining costs ~0.3 dB for an epoch)
    batch_size: int = 16
    learning_rate: float = 1e-3
    # The discriminator starts from nothing when it joins and has the GAN's epochs (280 steps) to
    # learn. At 2e-4 its class output named held-out real clips right at 0.22-0.29 in three runs
    # (chance 0.14), so the auxiliary class loss on samples told the decoder little; at 1e-3,
    # 0.33-0.57 in three. From the same warm-ups, the Frechet distance of VAE-GAN samples less
    # the VAE alone's (1,400 samples, 3 seeds, README) went from -0.07 to -0.13 on one and from
    # +0.04 to -0.03 on the other.
    disc_learning_rate: float = 1e-3
    val_fraction: float = 0.2
    split: str = "auto"
    seed: int = 0
    # 1: train on each clip at its own frame rate (a random start where the video is longer than
    # the clip), not also slowed down up to 2x as sora_cls does: a generative model learns (and
    # its prior is fitted to) the clips it is to draw. At 2.0, in one default run each, the judge
    # named class-conditional samples at 0.546 / 0.561 (VAE-GAN / VAE alone), at 1.0 0.646 / 0.657.
    stride_range: float = 1.0
    fps: float = 0.0
    patience: int = 10
    cache_mb: int = 2048
    mixed_precision: bool = False
    # Evaluation: a sora_cls trained on the same data judges samples (Frechet distance in its
    # embedding space, class accuracy). Empty: train one into the run's judge/ folder.
    judge_run: str = ""
    # sora_cls's own default. At 6 (the default before) the judge was still learning: 0.880 on the
    # real held-out clips against 0.921 at 20, for ~3 more minutes of a default run (README).
    judge_epochs: int = 20
    compare_vae: bool = True  # also train the VAE alone (run's vae_only/) and compare
    # Samples drawn per class for the Frechet distance and sample accuracy (both models alike). At
    # 40 (280 samples), the same models read 1.02-1.56 from seed to seed; at 200, 0.86-1.00.
    samples_per_class: int = 200

    @classmethod
    def tiny(cls):
        """Seconds on two CPU cores: `python -m sora_tf train --model sora_vaegan --preset tiny`."""
        return cls(num_frames=4, image_size=32, enc_widths=(8, 16), enc_features=16, cell_units=16,
                   motion_dim=4, content_widths=(8,), latent_channels=2, class_dim=4, dec_widths=(8,),
                   frame_widths=(8, 8), frame_channels=2,
                   disc_widths=(8, 16), disc_features=16,
                   disc_units=16, epochs=2, gan_warmup=1, batch_size=8, judge_epochs=1, samples_per_class=4)

    def validate(self):
        if self.split not in ("auto", "grouped", "stratified"):
            raise ValueError(f"split must be 'auto', 'grouped' or 'stratified', got {self.split!r}")
        if self.recon_loss not in ("l1", "l2"):
            raise ValueError(f"recon_loss must be 'l1' or 'l2', got {self.recon_loss!r}")
        if self.num_frames < 2:
            raise ValueError(f"num_frames must be >= 2 (the encoder reads frame differences), got {self.num_frames}")
        for key in ("image_size", "num_classes", "enc_features", "cell_units", "motion_dim",
                    "latent_channels", "frame_channels", "class_dim", "disc_features", "disc_units", "epochs", "batch_size", "samples_per_class"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.gan and self.gan_warmup >= self.epochs:
            raise ValueError(f"gan_warmup ({self.gan_warmup}) must be below epochs ({self.epochs})")
        for key in ("gan_warmup", "snapshot_epoch", "prior_components", "prior_motions", "kl_weight", "motion_weight", "adv_weight", "gen_class_weight", "feature_weight", "class_weight", "fps", "cache_mb"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key} must be >= 0, got {getattr(self, key)}")
        if len(self.dec_widths) != len(self.content_widths):
            raise ValueError(f"dec_widths {self.dec_widths} must undo content_widths {self.content_widths}: "
                             "give as many stages")
        for key in ("enc_widths", "content_widths"):
            if not getattr(self, key) or min(getattr(self, key)) < 1:
                raise ValueError(f"{key} needs positive widths, got {getattr(self, key)}")
        if len(self.frame_widths) < len(self.content_widths) or min(self.frame_widths, default=0) < 1:
            raise ValueError(f"frame_widths {self.frame_widths} needs positive widths, at least as many stages "
                             f"as content_widths {self.content_widths}")
        if self.max_shift < 0 or self.image_size <= 4 * (self.max_shift + 1):
            raise ValueError(f"max_shift must be >= 0 and below image_size / 4 - 1, got {self.max_shift} "
                             f"at image_size {self.image_size}")
        step = 2 ** len(self.frame_widths)
        if self.image_size % step:
            raise ValueError(f"image_size {self.image_size} must be divisible by 2^len(frame_widths) = {step}")

    @property
    def grid(self):
        """The content latent's grid side."""
        return self.image_size // 2 ** len(self.content_widths)

    @property
    def content_size(self):
        return self.grid * self.grid * self.latent_channels

    @property
    def frame_grid(self):
        """The frame codes' grid side."""
        return self.image_size // 2 ** len(self.frame_widths)

    @property
    def frames_size(self):
        return self.num_frames * self.frame_grid * self.frame_grid * self.frame_channels

    @property
    def shift_size(self):
        """The camera shift part: (x, y) per frame, or nothing with max_shift 0."""
        return 2 * self.num_frames if self.max_shift else 0

    @property
    def parts(self):
        """Where each part sits in the flat latent, in order: {name: slice}, as the encoder
        concatenates them; the decoder and the prior read the layout from here. (The encoder's
        concatenation is left as written: an extra op in its graph moves the names its saved
        weights load by, and runs saved before would no longer load.)"""
        sizes = {"content": self.content_size, "frames": self.frames_size, "motion": self.motion_dim,
                 "shifts": self.shift_size}
        ends = np.cumsum(list(sizes.values()))
        return {name: slice(int(end - size), int(end)) for (name, size), end in zip(sizes.items(), ends) if size}

    @property
    def latent_shape(self):
        """One flat vector per clip: the content grid's cells, the frame codes, the motion vector,
        the camera shifts (see `parts`)."""
        return (self.content_size + self.frames_size + self.motion_dim + self.shift_size,)

    @property
    def noise_shape(self):
        """The standard normal noise per clip that `SoraVaeGan.latent_from_noise` turns into a
        latent: one number per principal direction of the prior, one per latent number, one for
        where the clip happens and (with `prior_motions`) one for whose change over time it takes."""
        return (self.prior_components + self.latent_shape[0] + 1 + (1 if self.prior_motions else 0),)


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


def build_encoder(config):
    t, s, g = config.num_frames, config.image_size, config.grid
    # === Layers ===
    normalize = pixel_normalization(config.pixel_mean, config.pixel_std)
    cnn = frame_cnn((s, s, 6), config.enc_widths, config.enc_features)
    lstm = layers.LSTM(config.cell_units, unroll=config.unroll, name="lstm")
    content = keras.Sequential([keras.Input((s, s, 4))] + [
        layers.Conv2D(w, 3, strides=2, padding="same", activation="relu", name=f"conv{i}")
        for i, w in enumerate(config.content_widths)] + [
        layers.Conv2D(config.cell_units, 3, padding="same", activation="relu", name="mix")], name="content")
    per_frame = keras.Sequential([keras.Input((s, s, 3))] + [
        layers.Conv2D(w, 3, strides=2, padding="same", activation="relu", name=f"conv{i}")
        for i, w in enumerate(config.frame_widths)] + [
        layers.Conv2D(2 * config.frame_channels, 1, name="mean_log_var", dtype="float32")], name="frame_coder")
    # === Functional Model ===
    frames = keras.Input((t, s, s, 3), name="frames")
    x = normalize(layers.Identity(name="to_float", dtype="float32")(frames))
    # Frame codes of the frames with the camera's shift undone: a still scene shaken by the camera
    # codes as still frames. Content and motion read the frames as filmed (undone for them too,
    # fewer samples were named their class: module docstring).
    still = x
    if config.max_shift:
        shifts = CameraShifts(config.max_shift, name="camera_shifts", dtype="float32")(x)
        still = ShiftFrames(config.max_shift, name="stabilize", dtype="float32")(x, -shifts)
    x = FrameDiff(config.diff_scale, config.diff_clip, name="frame_diff")(x)
    # Content: the middle frame and where the clip moves (mean absolute frame difference), not
    # which way: the decoder is to take the way from the motion vector and the class. Without the
    # where, the drawn layer cannot tell the moving object from the still ones (they look alike).
    energy = ops.mean(ops.abs(x[:, 1:, ..., 3:]), axis=(1, -1))[..., None]
    c = content(ops.concatenate([x[:, t // 2, ..., :3], energy], axis=-1))
    c_mean = layers.Conv2D(config.latent_channels, 1, name="content_mean", dtype="float32")(c)
    c_log_var = layers.Conv2D(config.latent_channels, 1, name="content_log_var", dtype="float32")(c)
    m = lstm(FrameTimeDistributed(cnn, name="frame_features")(x))
    m_mean = layers.Dense(config.motion_dim, name="motion_mean", dtype="float32")(m)
    m_log_var = layers.Dense(config.motion_dim, name="motion_log_var", dtype="float32")(m)
    # Frames: a coarse code of every frame, which says where things are at each time.
    f = FrameTimeDistributed(per_frame, name="frame_codes")(still)  # [B, T, f, f, 2 * channels]
    f_mean, f_log_var = f[..., :config.frame_channels], f[..., config.frame_channels:]

    def flat(content_part, frames_part, motion_part, shift_part):
        parts = [ops.reshape(content_part, (-1, config.content_size)),
                 ops.reshape(frames_part, (-1, config.frames_size)), motion_part]
        return ops.concatenate(parts + ([ops.reshape(shift_part, (-1, config.shift_size))] if config.max_shift else []),
                               axis=-1)
    # The shifts are measured, not learned: a fixed posterior spread of SHIFT_SD px.
    s_mean = shifts if config.max_shift else None
    s_log_var = ops.full_like(shifts, 2.0 * np.log(SHIFT_SD)) if config.max_shift else None
    return keras.Model(frames, {"z_mean": flat(c_mean, f_mean, m_mean, s_mean),
                                "z_log_var": flat(c_log_var, f_log_var, m_log_var, s_log_var)}, name="encoder")


def build_decoder(config):
    """Latent [+ class] -> frames [B, T, S, S, 3] in [0, 1], drawn frame by frame.

    The content cells (+ class) are mixed by two 3x3 convs; each frame's coarse code, upsampled
    to the content grid, joins them, and an LSTM unrolled T steps from the motion vector (+ class)
    adds its state to every cell of its frame; one upsampling CNN draws each frame from that.
    The content holds the detail of the still scene, the frame codes where things are at each
    time: a moving object is drawn where its frame puts it, with no need to move anything. Each
    frame is drawn as if the camera stood still and then moved by the latent's camera shift for
    that frame (with max_shift 0, there is none).
    """
    t, u, g, fg = config.num_frames, config.cell_units, config.grid, config.frame_grid
    # === Layers ===
    mix = [layers.Conv2D(u, 3, padding="same", activation="relu", name=f"mix{i}") for i in range(2)]
    width = max(8, u // 2)
    join = layers.Conv2D(width, 3, padding="same", name="join")
    draw = upsampling_cnn((g, g, width), config.dec_widths, 3, name="draw")
    motion_in = layers.Dense(u, activation="relu", name="motion_embedding")
    lstm = layers.LSTM(u, return_sequences=True, unroll=config.unroll, name="lstm")
    from_state = layers.Dense(width, name="from_state")
    # === Functional Model ===
    z = keras.Input(config.latent_shape, name="z")
    inputs = {"z": z}
    part = config.parts
    x = ops.reshape(z[:, part["content"]], (-1, g, g, config.latent_channels))
    f = ops.reshape(z[:, part["frames"]], (-1, t, fg, fg, config.frame_channels))
    v = z[:, part["motion"]]
    if config.conditional:
        label = keras.Input((config.num_classes,), name="class")  # one-hot (or class weights)
        inputs["class"] = label
        c = layers.Dense(config.class_dim, name="class_embedding")(label)
        x = ops.concatenate([x, ops.tile(c[:, None, None, :], (1, g, g, 1))], axis=-1)
        v = ops.concatenate([v, c], axis=-1)
    for conv in mix:
        x = conv(x)
    f = FrameTimeDistributed(layers.UpSampling2D(g // fg, interpolation="bilinear"), name="frame_up")(f)
    h = from_state(lstm(ops.repeat(motion_in(v)[:, None, :], t, axis=1)))  # [B, T, width]
    y = FrameTimeDistributed(join, name="join")(ops.concatenate([ops.repeat(x[:, None], t, axis=1), f], axis=-1))
    y = ops.relu(y + h[:, :, None, None, :])
    out = FrameTimeDistributed(draw, name="draw_frames")(y)
    if config.max_shift:  # drawn still, then moved as the camera moved
        out = ShiftFrames(config.max_shift, name="camera_shift", dtype="float32")(
            out, ops.reshape(z[:, part["shifts"]], (-1, t, 2)))
    return keras.Model(inputs, out, name="decoder")


def build_discriminator(config):
    t, s = config.num_frames, config.image_size
    # === Layers ===
    cnn = frame_cnn((s, s, 6), config.disc_widths, config.disc_features, norm=False)
    lstm = layers.LSTM(config.disc_units, unroll=config.unroll, name="lstm")
    # === Functional Model ===
    frames = keras.Input((t, s, s, 3), name="frames")  # in [0, 1]
    x = (layers.Identity(name="to_float", dtype="float32")(frames) - 0.5) / 0.25
    x = FrameDiff(config.diff_scale, config.diff_clip, name="frame_diff")(x)
    x = FrameTimeDistributed(cnn, name="frame_features")(x)
    features = lstm(x)
    real = layers.Dense(1, name="real", dtype="float32")(features)
    classes = layers.Dense(config.num_classes, name="classes", dtype="float32")(features)
    return keras.Model(frames, {"real": real, "classes": classes, "features": features},
                       name="discriminator")


def _bce(logits, target):
    return ops.mean(ops.binary_crossentropy(ops.full_like(logits, target), logits, from_logits=True))


def _normal_cdf(x):
    return 0.5 * (1.0 + ops.erf(x / np.sqrt(2.0)))


def kl_per_clip(z_mean, z_log_var):
    """KL(q(z|x) || N(0, I)) in nats per clip: [B]."""
    kl = 0.5 * (ops.exp(z_log_var) + ops.square(z_mean) - 1.0 - z_log_var)
    return ops.sum(ops.reshape(kl, (ops.shape(kl)[0], -1)), axis=1)


@keras.saving.register_keras_serializable("sora_tf")
class SoraVaeGan(keras.Model):
    """Called on frames [B, T, S, S, 3] in [0, 255]: `reconstruction` in [0, 1] (decoded from
    `z_mean`), `z_mean` and `z_log_var`."""

    def __init__(self, config, **kwargs):
        if not isinstance(config, Config):
            if "frame_widths" not in config:
                raise ValueError("this sora_vaegan was saved by an earlier design (its config has no frame_widths: "
                                 "before the per-frame codes); its weights do not fit the current model: train it again")
            # Saved before camera shifts: none; before the prior's bank of changes: none either, so
            # that it draws what it drew (the same noise for the same seed).
            config = from_dict(Config, {"max_shift": 0, "prior_motions": 0, **config})
        config.validate()
        super().__init__(**kwargs)
        # === Layers ===
        self.encoder = build_encoder(config)
        self.decoder = build_decoder(config)
        self.discriminator = build_discriminator(config)
        self.seed = keras.random.SeedGenerator(config.seed)
        # The sampling prior (see `fit_prior`): N(0, I) until fitted.
        size = config.latent_shape[0]
        self.prior_mean = self.add_weight(shape=(config.num_classes if config.conditional else 1, size),
                                          initializer="zeros", trainable=False, name="prior_mean")
        rows = config.num_classes if config.conditional else 1
        self.prior_basis = self.add_weight(shape=(rows, config.prior_components, size), initializer="zeros",
                                           trainable=False, name="prior_basis")
        self.prior_scale = self.add_weight(shape=(rows, size), initializer="ones", trainable=False, name="prior_scale")
        t = config.num_frames
        self.prior_time = self.add_weight(shape=(rows, t, t), trainable=False, name="prior_time",
                                          initializer=lambda shape, dtype=None: ops.tile(ops.eye(t)[None], (rows, 1, 1)))
        if config.shift_size:  # a Cholesky factor of the class's camera shifts' covariance
            n = config.shift_size
            self.prior_shift = self.add_weight(shape=(rows, n, n), trainable=False, name="prior_shift",
                                               initializer=lambda shape, dtype=None: ops.tile(ops.eye(n)[None], (rows, 1, 1)))
        # Where drawn clips happen: per class, the chance of each move (dy, dx) in frame-grid cells
        # (index dy * f + dx, each mod f) from the grid's middle; unfitted, all at the middle.
        cells = config.frame_grid ** 2
        self.prior_where = self.add_weight(shape=(rows, cells), trainable=False, name="prior_where",
                                           initializer=lambda shape, dtype=None: ops.tile(ops.one_hot(0, cells)[None], (rows, 1)))
        if config.prior_motions:  # per class, training clips' frame-code changes over time (and how many)
            self.prior_changes = self.add_weight(shape=(rows, config.prior_motions, config.frames_size),
                                                 initializer="zeros", trainable=False, name="prior_changes")
            self.prior_changes_where = self.add_weight(shape=(rows, config.prior_motions), initializer="zeros",
                                                       trainable=False, name="prior_changes_where")
            self.prior_changes_count = self.add_weight(shape=(rows,), initializer="zeros", trainable=False,
                                                       name="prior_changes_count")
        names = ["loss", "recon", "kl", "psnr"] + (["adv", "gen_class", "feature", "d_loss", "d_accuracy"]
                                                   if config.gan else [])
        self.trackers = {n: keras.metrics.Mean(name=n) for n in names}
        # === Config ===
        self.config = config
        self.built = True

    def get_config(self):
        return {"config": dataclasses.asdict(self.config), "name": self.name, "trainable": self.trainable}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def load_own_variables(self, store):
        """The prior's variables in the order they were added. A checkpoint saved before the
        fitted prior has none of them: it samples from N(0, I), as it did when saved. One saved
        before `prior_time` draws the frame codes' residual independently in time, one saved
        before `prior_where` draws its latents unmoved (as fitted, not centred), and one saved
        without `prior_changes` (empty) draws the frame codes' change from the Gaussian, as they
        did."""
        own = [self.prior_mean, self.prior_basis, self.prior_scale, self.prior_time]
        own += [self.prior_shift] if self.config.shift_size else []
        own += [self.prior_where]
        own += ([self.prior_changes, self.prior_changes_where, self.prior_changes_count]
                if self.config.prior_motions else [])
        if len(store.keys()) > len(own):
            super().load_own_variables(store)  # Keras's error: not this model's variables
        for i in range(len(store.keys())):
            own[i].assign(store[str(i)])

    # === Inference ===
    def decoder_inputs(self, z, labels=None):
        """The decoder's input dict for latents `z` and int class ids `labels` (None: uniform)."""
        inputs = {"z": ops.convert_to_tensor(z, "float32")}
        if self.config.conditional:
            k = self.config.num_classes
            inputs["class"] = (ops.one_hot(ops.cast(labels, "int32"), k) if labels is not None
                               else ops.full((ops.shape(z)[0], k), 1.0 / k))
        return inputs

    def call(self, frames, training=False):
        q = self.encoder(frames, training=training)
        reconstruction = self.decoder(self.decoder_inputs(q["z_mean"]), training=training)
        return {"reconstruction": reconstruction, "z_mean": q["z_mean"], "z_log_var": q["z_log_var"]}

    def reconstruct(self, frames, labels=None):
        """Frames in [0, 1] decoded from z_mean, with the true classes when known."""
        q = self.encoder(frames, training=False)
        return self.decoder(self.decoder_inputs(q["z_mean"], labels), training=False)

    def sample(self, labels, seed=None, temperature=1.0):
        """Clips in [0, 1] decoded from latents drawn from the prior (see `fit_prior`), one per
        class id in `labels`."""
        labels = np.asarray(labels)
        noise = keras.random.normal((len(labels), *self.config.noise_shape), seed=seed)
        return self.decoder(self.decoder_inputs(self.latent_from_noise(noise * temperature, labels), labels),
                            training=False)

    def latent_from_noise(self, noise, labels=None):
        """Latents [B, D] from standard normal `noise` [B, *noise_shape] and int class
        ids `labels` (None, or an unconditional model: the one mean): mean of the class +
        noise along the principal directions + residual noise per number, the frame codes'
        correlated in time as the class's are (`prior_time`), the camera shifts drawn with their
        own covariance (`prior_shift`)."""
        c = self.config
        k, t, fs = c.prior_components, c.num_frames, c.frames_size
        noise = ops.convert_to_tensor(noise, "float32")
        batch = ops.shape(noise)[0]
        rows = (ops.zeros((batch,), "int32") if labels is None or not c.conditional else ops.cast(labels, "int32"))
        basis = ops.take(self.prior_basis, rows, axis=0)  # [B, k, D]
        residual = {name: noise[:, k + where.start:k + where.stop] for name, where in c.parts.items()}
        residual["frames"] = ops.reshape(ops.einsum("bts,bsi->bti", ops.take(self.prior_time, rows, axis=0),
                                                    ops.reshape(residual["frames"], (batch, t, fs // t))), (batch, fs))
        if "shifts" in residual:  # drawn with the class's covariance (their scale is 1)
            residual["shifts"] = ops.einsum("bij,bj->bi", ops.take(self.prior_shift, rows, axis=0), residual["shifts"])
        residual = ops.concatenate(list(residual.values()), axis=-1)
        z = (ops.take(self.prior_mean, rows, axis=0) + ops.einsum("bk,bkd->bd", noise[:, :k], basis)
             + residual * ops.take(self.prior_scale, rows, axis=0))
        end = k + c.latent_shape[0]  # the noise for where, then for whose change
        # Where: a number's normal CDF picks a move from the class's (inverse CDF).
        chance = _normal_cdf(noise[:, end])
        cdf = ops.cumsum(ops.take(self.prior_where, rows, axis=0), axis=-1)
        cells = c.frame_grid ** 2
        move = ops.minimum(ops.sum(ops.cast(cdf < chance[:, None], "int32"), axis=-1), cells - 1)
        if c.prior_motions:
            z, move = self._with_fitted_change(z, move, rows, _normal_cdf(noise[:, end + 1]))
        return roll_latent(c, z, move // c.frame_grid, move % c.frame_grid)

    def _with_fitted_change(self, z, move, rows, chance):
        """(latents, moves): centred latents `z` [B, D] with their frame codes' change over time
        replaced by that of the training clip that `chance` [B] in [0, 1) picks from its class's
        `prior_changes`, and `move` [B] by where that clip happened; rows whose class has none keep
        the Gaussian's change and `move`."""
        c = self.config
        t, part = c.num_frames, c.parts["frames"]
        count = ops.take(self.prior_changes_count, rows, axis=0)
        pick = ops.minimum(ops.cast(chance * count, "int32"), ops.maximum(ops.cast(count, "int32") - 1, 0))
        index = rows * c.prior_motions + pick  # into the classes' banks laid end to end
        change = ops.take(ops.reshape(self.prior_changes, (-1, c.frames_size)), index, axis=0)
        frames = ops.reshape(z[:, part], (-1, t, c.frames_size // t))
        still = ops.reshape(ops.repeat(ops.mean(frames, axis=1, keepdims=True), t, axis=1), (-1, c.frames_size))
        fitted = count > 0
        frames = ops.where(fitted[:, None], still + change, z[:, part])
        where = ops.cast(ops.take(ops.reshape(self.prior_changes_where, (-1,)), index), "int32")
        return (ops.concatenate([z[:, :part.start], frames, z[:, part.stop:]], axis=-1),
                ops.where(fitted, where, move))

    def motion_centres(self, frames):
        """Where each clip of `frames` moves most, in frame-grid cells (see `motion_centres`)."""
        return motion_centres(frames, self.config.frame_grid)

    def fit_prior(self, z_mean, labels=None, centres=None):
        """Fit the prior that `sample` draws from to the posterior means `z_mean` [N, D] of
        training clips (and their int `labels`): per class, a Gaussian with the class's mean, the
        first `prior_components` principal directions of its clips' spread around it, and the rest
        of their variance per latent number; that rest is drawn independently for each number,
        except that in the frame codes it is correlated in time as the class's is (a T x T
        correlation, shared by the cells). The camera shifts are left out of the principal
        directions and drawn with the class's full covariance of them (2T numbers), so that a
        drawn camera shakes as a filmed one does. (A class with fewer than 2 clips takes the
        spread of all clips around their class means.)

        With `centres` ([N, 2], where each clip moves most in frame-grid cells: `motion_centres`),
        each clip's content and frame codes are first moved (`roll_latent`) so that its centre is
        mid-grid, the Gaussian is fitted to those, and where a drawn clip happens is drawn apart
        from where the class's training clips happen (`prior_where`). Why: an object turning at
        one place is a few principal directions; turning anywhere, every place needs its own,
        and a Gaussian over all of them draws faint turns everywhere at once. Ad-hoc, on two
        VAE-alone runs of the default data (560 samples, one judge): Frechet distance 5.66 to
        3.09 and 5.29 to 1.61, `rotate` samples named right 0 to 0.22 and 0 to 0.02, all samples
        0.714 to 0.743 and 0.757 to 0.768 (the second run with `max_shift=4`).

        With `prior_motions` (the default), how the frame codes change over time is not drawn
        from the Gaussian: a draw keeps the Gaussian's time mean of its frame codes (and its content,
        motion vector and shifts), takes the change about that mean from one of up to
        `prior_motions` training clips of its class (`prior_changes`, chosen at random), and
        happens where that clip did. Why: a still scene shaken by the camera changes its frame codes
        in a way set by its texture, and an object turning changes them by its shape; a weighted
        sum of many clips' changes (any Gaussian fitted to them) is neither, and the judge called
        such `static` and `rotate` draws `zoom`. The appearance stays drawn, the motion is a
        filmed one. Ad-hoc, on one default run (280 samples each, README): the judge trained 20
        epochs named VAE-GAN samples 0.725 -> 0.850 (`static` 0.68 -> 0.85, `rotate` 0.07 ->
        0.57), Frechet distance 3.93 -> 1.10; the VAE alone 0.682 -> 0.854, 5.17 -> 1.55;
        decoding the training clips' own posterior means read 0.868 / 0.886.

        Why in time: the rest of a frame code moves little from one frame to the next
        (correlation 0.8-0.9 at one frame apart, 0.6-0.7 at seven, default run), and drawn independently
        it flickers, which the judge reads as `zoom`: `static` samples were called `static` 0 times
        in 80. With the correlation, class-conditional samples of the VAE alone were named their
        class at 0.707 against 0.662, Frechet distance 8.94 against 9.59 (the VAE-GAN's: 0.661
        against 0.637, 10.80 against 10.17; ad-hoc script, 560 samples of one default run with
        kl_weight 0.05).

        Per class, because the class is in how the spread goes: the frame codes of a clip whose
        object moves left vary together in a way that a right-moving one's do not, and directions
        pooled over the classes mix the two. A Gaussian keeps that: drawn in pixel space (16 x 16,
        frames of the default training clips), 128 directions per class gave samples the judge
        called their class at 0.754, 64 at 0.143 (every sample one class).

        Why: with a KL weight small enough to reconstruct well, the encoder's latents do not fill
        N(0, I), and the decoder never saw what N(0, I) draws look like. Fitting a density to the
        latents after training is ex-post density estimation (Ghosh et al., 2020) or the second
        stage of a two-stage VAE (Dai and Wipf, 2019). Measured on the default data: the judge's
        Frechet distance of VAE-GAN samples fell from 58.4 (N(0, I)) to 14.0 (fitted); the VAE
        alone stayed at 59.5 to 59.8. (Two halves of the real clips are ~0.5 apart: the samples
        are nearer real clips, not as near.)
        """
        z = np.asarray(z_mean, np.float32)
        n, size = z.shape
        if n < 2 or size != self.config.latent_shape[0]:
            raise ValueError(f"fit_prior needs posterior means [N >= 2, {self.config.latent_shape[0]}], got {z.shape}")
        rows = self.prior_mean.shape[0]
        labels = np.zeros(n, int) if labels is None or rows == 1 else np.asarray(labels, int)
        f = self.config.frame_grid
        moves = np.zeros((n, 2), int)  # from the grid's middle to where each clip moves most
        if centres is not None:
            centres = np.asarray(centres, np.float32)
            if centres.shape != (n, 2):
                raise ValueError(f"fit_prior needs one centre (row, column) per clip, [{n}, 2], got {centres.shape}")
            moves = np.floor(centres + 0.5).astype(int) - (f - 1) // 2  # nearest cell less the middle one
            z = np.asarray(roll_latent(self.config, z, -moves[:, 0], -moves[:, 1]))
        where = np.zeros((rows, f * f), np.float32)
        cells = (moves[:, 0] % f) * f + moves[:, 1] % f  # each clip's place, as prior_where indexes it
        np.add.at(where, (labels, cells), 1.0)
        where[where.sum(1) == 0] = where.sum(0)  # a class without clips: where all clips happen
        means = np.tile(z.mean(0), (rows, 1))
        for c in np.unique(labels):
            means[c] = z[labels == c].mean(0)
        counts = np.bincount(labels, minlength=rows)
        # The pooled fit (an SVD of every clip, ~8 s at the default size) only where a class needs it.
        pooled = self._gaussian(z - means[labels]) if (counts < 2).any() else None
        fits = [self._gaussian(z[labels == c] - means[c]) if counts[c] >= 2 else pooled for c in range(rows)]
        basis, scale, time, shift = (np.stack(part) for part in zip(*fits))
        self.prior_mean.assign(means)
        self.prior_basis.assign(basis)
        self.prior_scale.assign(scale)
        self.prior_time.assign(time)
        if self.config.shift_size:
            self.prior_shift.assign(shift)
        self.prior_where.assign(where / where.sum(1, keepdims=True))
        if self.config.prior_motions:
            self._fit_changes(z, labels, rows, cells)

    def _fit_changes(self, z, labels, rows, cells):
        """`prior_changes`: per class, up to `prior_motions` of its clips (chosen at random, seeded)
        as their frame codes' change about their own time mean, from the (centred) latents `z`,
        with where each happened (`cells`, as `prior_where` counts them)."""
        c = self.config
        k, part = c.prior_motions, c.parts["frames"]
        frames = z[:, part].reshape(len(z), c.num_frames, -1)
        change = (frames - frames.mean(1, keepdims=True)).reshape(len(z), -1)
        bank = np.zeros((rows, k, c.frames_size), np.float32)
        where = np.zeros((rows, k), np.float32)
        count = np.zeros(rows, np.float32)
        rng = np.random.default_rng(c.seed)
        for row in range(rows):
            chosen = rng.permutation(np.flatnonzero(labels == row))[:k]
            bank[row, :len(chosen)] = change[chosen]
            where[row, :len(chosen)] = cells[chosen]
            count[row] = len(chosen)
        self.prior_changes.assign(bank)
        self.prior_changes_where.assign(where)
        self.prior_changes_count.assign(count)

    def _gaussian(self, spread):
        """(basis [prior_components, D], residual scale [D], Cholesky factor [T, T] of the frame
        codes' residual correlation in time, Cholesky factor of the camera shifts' covariance) of
        zero-mean rows `spread`. The shifts are fitted apart from the rest (the camera's shake has
        nothing to do with the scene) and in full: 2T numbers, correlated in time as a shaking
        camera's are."""
        c = self.config
        n, size = spread.shape
        ss = c.shift_size
        shifts, spread = spread[:, size - ss:], spread[:, :size - ss]  # the shifts are the last part
        shift = np.linalg.cholesky(shifts.T @ shifts / (n - 1) + 1e-4 * np.eye(ss)) if ss else np.zeros((0, 0))
        _, s, vt = np.linalg.svd(spread, full_matrices=False)
        k = min(c.prior_components, len(s))
        basis = np.zeros((c.prior_components, size), np.float32)
        basis[:k, :size - ss] = vt[:k] * (s[:k, None] / np.sqrt(n - 1))
        rest = spread - (spread @ vt[:k].T) @ vt[:k]
        scale = np.concatenate([np.sqrt(np.sum(np.square(rest), axis=0) / (n - 1)), np.ones(ss)])
        part = c.parts["frames"]
        frames = (rest[:, part] / np.maximum(scale[part], 1e-6)).reshape(n, c.num_frames, -1)
        cov = np.einsum("nti,nsi->ts", frames, frames)
        time = np.eye(c.num_frames)
        if np.all(np.diag(cov) > 1e-9):  # else no residual left to correlate
            root = np.sqrt(np.diag(cov))
            time = np.linalg.cholesky(cov / np.outer(root, root) + 1e-4 * time) / np.sqrt(1 + 1e-4)
        return basis, scale, time, shift

    def anomaly_score(self, frames, labels=None):
        """Per clip, [B] each: `reconstruction` (mean squared error per pixel value), `kl`
        (KL of q(z|x) per latent dim), `score`, the negative ELBO up to constants in the form
        of the training loss: the squared error weighted as training weighs it (`motion_weight`:
        more where the clip changes) + kl_weight x KL per pixel value, and `temporal`:
        the error of the frames drawn through the frame codes (all but the middle one) over the
        error of the middle frame, which the content part encodes itself.

        Why `temporal`: a clip from a scene the model never saw reconstructs worse in every
        frame, whatever happens in it; over its own middle frame's error, what is left is how
        much worse the model draws the clip's changes over time. On fight_surv (trained on
        noFight, README) it read 0.752 AUROC where `score` read 0.659: it is the clip's motion,
        seen through the model (motion energy alone, no model: 0.756). Why weighted: on the
        same clips, a model trained with motion_weight 10 read 0.666 weighted and 0.616 plain, one
        trained without 0.691 and 0.669 (README)."""
        q = self.encoder(frames, training=False)
        rec = self.decoder(self.decoder_inputs(q["z_mean"], labels), training=False)
        x = ops.cast(frames, "float32") / 255.0
        frame_mse = ops.mean(ops.square(x - rec), axis=(2, 3, 4))  # [B, T]
        mse = ops.mean(frame_mse, axis=1)
        t, mid = self.config.num_frames, self.config.num_frames // 2
        others = (ops.sum(frame_mse, axis=1) - frame_mse[:, mid]) / (t - 1)
        kl = kl_per_clip(q["z_mean"], q["z_log_var"])
        weighted = mse  # the squared error weighted as training weighs it (motion_weight)
        if self.config.motion_weight:
            weight = change_weights(x, self.config.motion_weight)
            weighted = (ops.sum(weight * ops.square(x - rec), axis=(1, 2, 3, 4))
                        / (ops.sum(weight, axis=(1, 2, 3, 4)) * float(x.shape[-1])))
        return {"score": weighted + self.config.kl_weight * kl / float(np.prod(x.shape[1:])),
                "reconstruction": mse, "kl": kl / float(np.prod(self.config.latent_shape)),
                "temporal": others / ops.maximum(frame_mse[:, mid], 1e-8)}

    # === Training ===
    def compile(self, decay_steps=None, **kwargs):
        """Adam for the VAE and for the discriminator, with cosine decay over `decay_steps` when
        given (to 5%); loss-scaled under mixed_float16."""
        super().compile(**kwargs)
        c = self.config
        self.decay_steps = decay_steps

        def rate(lr):
            return keras.optimizers.schedules.CosineDecay(lr, decay_steps, alpha=0.05) if decay_steps else lr
        self.vae_optimizer = keras.optimizers.Adam(rate(c.learning_rate))
        self.d_optimizer = keras.optimizers.Adam(rate(c.disc_learning_rate), beta_1=0.5)
        if keras.mixed_precision.global_policy().name == "mixed_float16":
            self.vae_optimizer = keras.optimizers.LossScaleOptimizer(self.vae_optimizer)
            self.d_optimizer = keras.optimizers.LossScaleOptimizer(self.d_optimizer)
        self.vae_optimizer.build(self.encoder.trainable_variables + self.decoder.trainable_variables)
        self.d_optimizer.build(self.discriminator.trainable_variables)

    def get_compile_config(self):
        return {"decay_steps": getattr(self, "decay_steps", None)}

    def compile_from_config(self, config):
        """Loading a checkpoint recompiles, so that optimizer state restores (for --resume)."""
        self.compile(decay_steps=config.get("decay_steps"))

    @property
    def metrics(self):
        return list(self.trackers.values())

    def _vae_terms(self, x, rec, q):
        """The VAE's loss (reconstruction + kl_weight x KL per pixel value) and what is logged of
        it: `recon`, `kl` (per latent dim) and `psnr` (per frame, averaged)."""
        err = ops.abs(x - rec) if self.config.recon_loss == "l1" else ops.square(x - rec)
        recon = ops.mean(err)
        loss = recon
        if self.config.motion_weight:
            weight = change_weights(x, self.config.motion_weight)
            loss = ops.sum(weight * err) / (ops.sum(weight) * float(x.shape[-1]))
        kl = ops.mean(kl_per_clip(q["z_mean"], q["z_log_var"]))
        frame_mse = ops.mean(ops.reshape(ops.square(x - rec), (-1, *x.shape[2:])), axis=(1, 2, 3))
        return {"loss": loss + self.config.kl_weight * kl / float(np.prod(x.shape[1:])), "recon": recon,
                "kl": kl / float(np.prod(self.config.latent_shape)),
                "psnr": ops.mean(-10.0 * ops.log(ops.maximum(frame_mse, 1e-10)) / np.log(10.0))}

    def train_step(self, data):
        frames, labels = data
        c = self.config
        x = ops.cast(frames, "float32") / 255.0
        batch = ops.shape(x)[0]
        vae_vars = self.encoder.trainable_variables + self.decoder.trainable_variables
        with tf.GradientTape() as vae_tape, tf.GradientTape() as d_tape:
            q = self.encoder(frames, training=True)
            eps = keras.random.normal(ops.shape(q["z_mean"]), seed=self.seed)
            z = q["z_mean"] + ops.exp(0.5 * q["z_log_var"]) * eps
            rec = self.decoder(self.decoder_inputs(z, labels), training=True)
            logs = self._vae_terms(x, rec, q)
            vae_loss = logs["loss"]
            if c.gan:
                fake_labels = keras.random.randint((batch,), 0, c.num_classes, seed=self.seed)
                # From the sampling prior when fitted (at the warm-up's end, see sora_tf.train.run),
                # so that the discriminator judges the clips `sample` draws; N(0, I) before that.
                # On N(0, I) draws, the VAE-GAN's samples came out further from real clips than the
                # VAE alone's (Frechet distance 15.76 against 8.47 in a default run; the judge named
                # their class at 0.407 against 0.589); on the prior's, 11.83 against 11.12 and
                # 0.546 against 0.561 (README: the discriminator does not help this design yet).
                noise = keras.random.normal((batch, *c.noise_shape), seed=self.seed)
                z_p = self.latent_from_noise(noise, fake_labels)
                gen = self.decoder(self.decoder_inputs(z_p, fake_labels), training=True)
                d_real = self.discriminator(x, training=True)
                d_rec = self.discriminator(rec, training=True)
                d_gen = self.discriminator(gen, training=True)
                adv = 0.5 * (_bce(d_rec["real"], 1.0) + _bce(d_gen["real"], 1.0))
                gen_class = ops.mean(ops.sparse_categorical_crossentropy(
                    fake_labels, d_gen["classes"], from_logits=True)) if c.conditional else 0.0
                f_real, f_rec = (ops.cast(d["features"], "float32") for d in (d_real, d_rec))
                feature = ops.mean(ops.abs(ops.stop_gradient(f_real) - f_rec))
                vae_loss = vae_loss + c.adv_weight * adv + c.gen_class_weight * gen_class + c.feature_weight * feature
                real_class = ops.mean(ops.sparse_categorical_crossentropy(
                    labels, d_real["classes"], from_logits=True)) if c.conditional else 0.0
                d_loss = (_bce(d_real["real"], 1.0) + 0.5 * (_bce(d_rec["real"], 0.0) + _bce(d_gen["real"], 0.0))
                          + c.class_weight * real_class)
            scaled = self.vae_optimizer.scale_loss(vae_loss)
            if c.gan:
                d_scaled = self.d_optimizer.scale_loss(d_loss)
        self.vae_optimizer.apply_gradients(zip(vae_tape.gradient(scaled, vae_vars), vae_vars))
        logs["loss"] = vae_loss
        if c.gan:
            d_vars = self.discriminator.trainable_variables
            self.d_optimizer.apply_gradients(zip(d_tape.gradient(d_scaled, d_vars), d_vars))
            correct = ops.concatenate([ops.cast(d_real["real"] > 0, "float32"),
                                       ops.cast(d_gen["real"] < 0, "float32")], axis=0)
            logs.update(adv=adv, gen_class=gen_class, feature=feature, d_loss=d_loss,
                        d_accuracy=ops.mean(correct))
        self._track(logs, batch)
        return {k: t.result() for k, t in self.trackers.items()}

    def test_step(self, data):
        frames, labels = data
        x = ops.cast(frames, "float32") / 255.0
        q = self.encoder(frames, training=False)
        rec = self.decoder(self.decoder_inputs(q["z_mean"], labels), training=False)
        logs = self._vae_terms(x, rec, q)
        self._track(logs, ops.shape(x)[0])
        return {k: self.trackers[k].result() for k in logs}

    def _track(self, logs, batch):
        """Means weighted by clips: with a dataset of unknown length (ours filter out unreadable
        videos), `fit`/`evaluate` end on an empty step, which unweighted means counted as a 0
        (held-out PSNR read 21.95 dB for 23.17 over 18 batches)."""
        n = ops.cast(batch, "float32")
        for k, v in logs.items():
            v = ops.cast(v, "float32")
            self.trackers[k].update_state(ops.where(n > 0, v, 0.0), sample_weight=n)


def build(config):
    return SoraVaeGan(config, name="sora_vaegan")
