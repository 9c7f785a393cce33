"""The generative task: fitting a model that trains itself (its own `train_step` and optimizers)
with the runs it is measured by and starts from, then fitting its sampling prior.

A generative model exposes `compile(decay_steps)`, `encoder`, `fit_prior(z, labels, centres)`,
`motion_centres(frames)`, `reconstruct`, `sample` and `config.{gan, gan_warmup, compare_vae,
judge_run, judge_model, judge_epochs, snapshot_epoch, mixed_precision, prior_align}`.
"""
import logging
import os

import keras
import numpy as np

from sora_tf.atomic import atomic_write
from sora_tf.config import as_sets
from sora_tf.data.pipeline import supervised
from sora_tf.runs import load_checkpoint, load_json
from sora_tf.train.clips import default_data, prepare  # noqa: F401 (this task's data: labelled clips)
from sora_tf.train.fitting import RunCheckpoint, SaveAfter, log_callbacks, resume
from sora_tf.train.generate_eval import evaluate_generative as evaluate, summary_lines as describe

__all__ = ["trainer", "fit", "evaluate", "describe"]

log = logging.getLogger("sora_tf.train")


def trainer(model, config, steps_per_epoch):
    """The model itself, compiled with its cosine schedules over the run's steps."""
    model.compile(decay_steps=max(1, config.epochs * steps_per_epoch))
    return model


def fit(job):
    """Train the companions (`_train_companions`), then fit() the model; best.keras at best
    val_psnr, then its prior fitted to the training clips. Under `mixed_precision=true` the
    layers compute in 16 bits (outputs and losses in float32)."""
    config, out = job.config, job.out
    # First, as the GAN starts from the vae_only twin's warm-up epochs.
    _train_companions(job)
    if job.resuming:
        model, initial_epoch, best, _ = resume(out)
    else:
        model = job.module.build(config)
        initial_epoch, best = 0, None
        if config.gan and config.gan_warmup:
            warm = os.path.join(out, "vae_only", f"epoch{config.gan_warmup}.keras")
            vae = load_checkpoint(warm)
            model.encoder.set_weights(vae.encoder.get_weights())
            model.decoder.set_weights(vae.decoder.get_weights())
            initial_epoch = config.gan_warmup
            log.info("encoder and decoder from %s; the discriminator joins at epoch %d", warm, initial_epoch + 1)
            # The discriminator's generated clips are drawn from the prior that sampling uses.
            fit_prior(model, supervised(job.train_ds.take(job.steps)))
        model.compile(decay_steps=(config.epochs - initial_epoch) * job.steps)
    callbacks = [keras.callbacks.TerminateOnNaN(), *log_callbacks(out, job.resuming, job.backup),
                 RunCheckpoint(out, model, monitor="val_psnr", best=best, save_trainer=False)]
    if config.snapshot_epoch:
        callbacks.append(SaveAfter(config.snapshot_epoch, os.path.join(out, f"epoch{config.snapshot_epoch}.keras")))
    if initial_epoch < config.epochs:
        model.fit(supervised(job.train_ds), steps_per_epoch=job.steps, validation_data=supervised(job.val_ds),
                  epochs=config.epochs, initial_epoch=initial_epoch, callbacks=callbacks, verbose=job.verbose)
    if model.stop_training:
        raise FloatingPointError(f"{out}: training stopped on a NaN loss; see history.csv")
    best_path = os.path.join(out, "best.keras")
    best_model = load_checkpoint(best_path)
    fit_prior(best_model, supervised(job.train_ds.take(job.steps)))
    atomic_write(best_path, best_model.save)
    log.info("sampling prior saved: %s", best_path)


def fit_prior(model, dataset, limit=4096):
    """Fit `model`'s sampling prior to the posterior means of (up to `limit`) training clips."""
    z, labels, centres = [], [], []
    for frames, y in dataset:
        z.append(np.asarray(model.encoder(frames, training=False)["z_mean"]))
        labels.append(np.asarray(y))
        centres.append(model.motion_centres(frames))
        if sum(map(len, z)) >= limit:
            break
    z = np.concatenate(z)
    model.fit_prior(z, np.concatenate(labels), np.concatenate(centres) if model.config.prior_align else None)
    log.info("sampling prior fitted to %d training clips", len(z))


def _train_companions(job):
    """What a generative run is measured with and starts from, trained into its folder (each
    resumes if begun): `judge/`, a `judge_model` classifier on the same data, clip length, frame
    size and split (unless `judge_run`), and `vae_only/`, the same model and data without the
    discriminator, for `epochs` (when `compare_vae`) or just the GAN's `gan_warmup` epochs.
    """
    config = job.config

    def run(name, sub, sets, epochs=None):
        path = os.path.join(job.out, sub)
        state = os.path.join(path, "state.json")
        if not (os.path.isfile(state) and load_json(state).get("finished")):
            log.info("training %s into %s", name, path)
            job.train(name, job.data, path, epochs, sets, job.preset,
                      os.path.isfile(os.path.join(path, "last.keras")), job.strict, job.verbose)
        return os.path.abspath(path)

    judge = config.judge_run or run(config.judge_model, "judge", [f"{k}={getattr(config, k)}" for k in (
        "num_frames", "image_size", "val_fraction", "test_fraction", "split", "seed", "fps")], config.judge_epochs)
    if config.gan and (config.compare_vae or config.gan_warmup):
        # The VAE alone: for comparison (all epochs), and for the GAN's warm-up (its first epochs).
        epochs = config.epochs if config.compare_vae else config.gan_warmup
        run(job.model_name, "vae_only", as_sets(config) + [
            "gan=false", "compare_vae=false", f"judge_run={judge}", f"epochs={epochs}",
            f"snapshot_epoch={config.gan_warmup}"])
