"""SoraVaeGan: the video VAE and its discriminator, with the training step that fits both."""
import dataclasses

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from sora_tf.config import from_dict
from sora_tf.models.vaegan.config import ADDED_FIELDS, Config
from sora_tf.models.vaegan.layers import bce, change_weights, kl_per_clip
from sora_tf.models.vaegan.networks import build_decoder, build_discriminator, build_encoder
from sora_tf.models.vaegan.prior import LatentPrior


@keras.saving.register_keras_serializable("sora_tf")
class SoraVaeGan(LatentPrior, keras.Model):
    """Called on frames [B, T, S, S, 3] in [0, 255]: `reconstruction` in [0, 1] (decoded from
    `z_mean`), `z_mean` and `z_log_var`."""

    def __init__(self, config, **kwargs):
        if not isinstance(config, Config):
            if "frame_widths" not in config:
                raise ValueError("this sora_vaegan was saved by an earlier design (its config has no frame_widths: "
                                 "before the per-frame codes); its weights do not fit the current model: train it again")
            config = from_dict(Config, {**ADDED_FIELDS, **config})
        config.validate()
        super().__init__(**kwargs)
        # === Layers ===
        self.encoder = build_encoder(config)
        self.decoder = build_decoder(config)
        self.discriminator = build_discriminator(config)
        self.seed = keras.random.SeedGenerator(config.seed)
        self._add_prior(config)
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

    def unrolled(self):
        """The same model with its LSTMs unrolled over T, for builtins-only TFLite."""
        copy = SoraVaeGan(dataclasses.replace(self.config, unroll=True), name=self.name)
        copy.set_weights(self.get_weights())
        return copy

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

    def embed(self, frames):
        """The clip embedding [B, D]: the posterior mean `z_mean` (content grid, frame codes, motion)."""
        return self.encoder(frames, training=False)["z_mean"]

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

    def anomaly_score(self, frames, labels=None):
        """Per clip, [B] each: `reconstruction` (mean squared error per pixel value), `kl`
        (KL of q(z|x) per latent dim), `score`, the negative ELBO up to constants in the form of
        the training loss (the squared error weighted by `motion_weight`, + kl_weight x KL per
        pixel value), and `temporal`: the error of the frames drawn through the frame codes (all
        but the middle one) over the error of the middle frame, which the content part encodes
        itself; a scene the model never saw reconstructs worse in every frame, and the ratio
        leaves how much worse it draws the clip's changes (docs/sora_vaegan.md).
        """
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
        super().compile(**{"jit_compile": self.config.jit_compile, **kwargs})
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
                # From the sampling prior when fitted (at the warm-up's end), so that the
                # discriminator judges the clips `sample` draws; N(0, I) before that.
                noise = keras.random.normal((batch, *c.noise_shape), seed=self.seed)
                z_p = self.latent_from_noise(noise, fake_labels)
                gen = self.decoder(self.decoder_inputs(z_p, fake_labels), training=True)
                d_real = self.discriminator(x, training=True)
                d_rec = self.discriminator(rec, training=True)
                d_gen = self.discriminator(gen, training=True)
                adv = 0.5 * (bce(d_rec["real"], 1.0) + bce(d_gen["real"], 1.0))
                gen_class = ops.mean(ops.sparse_categorical_crossentropy(
                    fake_labels, d_gen["classes"], from_logits=True)) if c.conditional else 0.0
                f_real, f_rec = (ops.cast(d["features"], "float32") for d in (d_real, d_rec))
                feature = ops.mean(ops.abs(ops.stop_gradient(f_real) - f_rec))
                vae_loss = vae_loss + c.adv_weight * adv + c.gen_class_weight * gen_class + c.feature_weight * feature
                real_class = ops.mean(ops.sparse_categorical_crossentropy(
                    labels, d_real["classes"], from_logits=True)) if c.conditional else 0.0
                d_loss = (bce(d_real["real"], 1.0) + 0.5 * (bce(d_rec["real"], 0.0) + bce(d_gen["real"], 0.0))
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
