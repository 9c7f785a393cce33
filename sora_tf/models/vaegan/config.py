"""sora_vaegan's config: plain fields with defaults, a tiny preset, and the latent's layout."""
import dataclasses

import numpy as np

from sora_tf.config import check_choices, validate_split

# Fields added after runs were saved, with the value those runs had (a saved model or a resumed
# run): before camera shifts, none; before the prior's bank of changes, none either, so that it
# draws what it drew (the same noise for the same seed).
ADDED_FIELDS = {"max_shift": 0, "prior_motions": 0}


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
    # Camera shift, off by default (docs/sora_vaegan.md): each frame's shift against the middle
    # frame, found by block matching within +-max_shift px, is 2 more latent numbers per frame; the
    # encoder codes the frames with it undone and the decoder moves the frames it draws by it.
    max_shift: int = 0
    # Discriminator
    disc_widths: tuple = (24, 48, 64, 96)
    disc_features: int = 128
    disc_units: int = 64
    unroll: bool = False  # export sets it for builtins-only TFLite
    # Sampling (see `fit_prior`): a Gaussian per class fitted to the training clips' posterior means
    # after training, with this many principal directions of the within-class spread (0: none).
    prior_components: int = 128
    # A drawn clip's frame codes change over time as one of this many training clips of its class
    # did (0: as the Gaussian draws).
    prior_motions: int = 128
    # Fit the Gaussian to the clips moved so that where each moves most is mid-grid, and draw where
    # a clip happens apart, from where the class's training clips do.
    prior_align: bool = True
    # Losses
    gan: bool = True  # False: the VAE alone
    gan_warmup: int = 3  # epochs of VAE alone (the vae_only twin's first ones) before the discriminator joins
    snapshot_epoch: int = 0  # > 0: also save epoch<k>.keras after k epochs (the warm-up hand-over)
    recon_loss: str = "l1"
    # Each pixel's reconstruction error weighs 1 + motion_weight * min(|x_t - time mean| / 0.1, 1),
    # over the weights' mean, so that the few pixels that change count for what they show. 0: plain.
    motion_weight: float = 10.0
    kl_weight: float = 0.01  # on KL (nats) per pixel value
    adv_weight: float = 0.002
    gen_class_weight: float = 0.002  # the discriminator's class loss on conditional samples, for the decoder
    feature_weight: float = 0.01
    class_weight: float = 1.0  # discriminator's class loss on real clips
    # Training
    epochs: int = 5  # over the default data's training clips: ~850 steps
    batch_size: int = 16
    learning_rate: float = 1e-3
    disc_learning_rate: float = 1e-3  # the discriminator starts from nothing when it joins
    val_fraction: float = 0.2
    test_fraction: float = 0.15  # held out first, evaluated once at the end (0: none)
    split: str = "auto"
    seed: int = 0
    # 1: each clip at its own frame rate: a generative model learns the clips it is to draw.
    stride_range: float = 1.0
    fps: float = 0.0
    patience: int = 10
    cache_mb: int = 2048
    # Compute in 16-bit floats (mixed_float16 on a GPU, mixed_bfloat16 on a CPU; weights, softmax
    # and losses stay float32; exports are float32) and compile the training step with XLA.
    mixed_precision: bool = False
    jit_compile: bool = False
    # Evaluation: a classifier trained on the same data judges samples (Frechet distance in its
    # embedding space, class accuracy). judge_run empty: train a `judge_model` into judge/.
    judge_run: str = ""
    judge_model: str = "sora_cls"
    judge_epochs: int = 20
    compare_vae: bool = True  # also train the VAE alone (run's vae_only/) and compare
    samples_per_class: int = 200  # drawn per class for the Frechet distance and sample accuracy

    @classmethod
    def tiny(cls):
        """Seconds on two CPU cores: `python -m sora_tf train --model sora_vaegan --preset tiny`."""
        return cls(num_frames=4, image_size=32, enc_widths=(8, 16), enc_features=16, cell_units=16,
                   motion_dim=4, content_widths=(8,), latent_channels=2, class_dim=4, dec_widths=(8,),
                   frame_widths=(8, 8), frame_channels=2,
                   disc_widths=(8, 16), disc_features=16,
                   disc_units=16, epochs=2, gan_warmup=1, batch_size=8, judge_epochs=1, samples_per_class=4)

    def validate(self):
        validate_split(self)
        check_choices(self, {"recon_loss": ("l1", "l2")})
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
