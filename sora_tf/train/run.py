"""A training run: data listing, split, fit with checkpoints and logs, then evaluation.

Everything a run needs later lives in its folder: config.json (resolved, including the input
preprocessing that export bakes in), classes.json, split.json, data_report.json, last.keras,
best.keras, state.json, history.csv, tb/ (TensorBoard), metrics.json and the plots.
"""
import dataclasses
import json
import logging
import os
import sys
import time

import keras
import numpy as np
from keras import ops

from sora_tf import models
from sora_tf.config import from_dict, override
from sora_tf.data import synthetic
from sora_tf.data.augment import ClipAugment
from sora_tf.data.pipeline import DecodeFailures, dataset_for, supervised
from sora_tf.data.sources import list_clips
from sora_tf.data.split import grouped_split, stratified_split
from sora_tf.train.checkpoint import RunCheckpoint, atomic_write, load_json, save_json

log = logging.getLogger("sora_tf.train")


def resolve_data(data, preset):
    """The user's data, or the generated default (tiny variant for the tiny preset)."""
    if data:
        return data
    return synthetic.ensure("tiny" if preset == "tiny" else "default")


def augmenter(config):
    return ClipAugment(
        zoom=config.aug_zoom, translate=config.aug_translate, rotation_deg=config.aug_rotation_deg,
        flip=config.aug_flip, brightness=config.aug_brightness, contrast=config.aug_contrast,
        saturation=config.aug_saturation, hue=config.aug_hue, noise_std=config.aug_noise_std,
        seed=config.seed, name="augment")


def trainer_for(core, config):
    """uint8 clips -> augmentation (training only) -> core model -> probabilities."""
    frames = keras.Input((config.num_frames, config.image_size, config.image_size, 3),
                         dtype="uint8", name="frames")
    probabilities = core(augmenter(config)(frames))["probabilities"]
    return keras.Model(frames, probabilities, name="trainer")


@keras.saving.register_keras_serializable("sora_tf")
class AdamWarmEMA(keras.optimizers.AdamW):
    """AdamW whose weight average (`use_ema`) warms up: after n steps its momentum is
    min(ema_momentum, (1 + n) / (3 + n)), so that it spans about the last half of the steps so
    far, up to 1 / (1 - ema_momentum) steps (the form of `num_updates` in TensorFlow's
    `tf.train.ExponentialMovingAverage`, which spans a ninth). Keras's own average uses
    ema_momentum from the second step: a run of about a hundred steps validated and kept weights
    that were still largely the initial ones (see the README)."""

    def _update_model_variables_moving_average(self, trainable_variables):
        if not self.use_ema:
            return
        n = ops.cast(self.iterations, "float32")
        momentum = ops.where(n > 0, ops.minimum(self.ema_momentum, (1.0 + n) / (3.0 + n)), 0.0)
        for var, average in zip(trainable_variables, self._model_variables_moving_average):
            if average is not None:
                m = ops.cast(momentum, var.dtype)
                average.assign(m * average + (1.0 - m) * var)


def compile_trainer(trainer, config, steps_per_epoch):
    schedule = keras.optimizers.schedules.CosineDecay(
        config.learning_rate, decay_steps=max(1, config.epochs * steps_per_epoch), alpha=0.05)
    optimizer = AdamWarmEMA(schedule, weight_decay=config.weight_decay,
                            use_ema=config.ema_momentum > 0, ema_momentum=config.ema_momentum)
    trainer.compile(optimizer=optimizer,
                    loss=keras.losses.SparseCategoricalCrossentropy(), metrics=["accuracy"])


def _data_flags(data):
    meta = os.path.join(data, "dataset.json") if os.path.isdir(data) else None
    return load_json(meta) if meta and os.path.isfile(meta) else {}


def _datasets(config, listing, split, failures):
    size = (config.image_size, config.image_size)
    train = listing.subset(split["train"])
    val = listing.subset(split["val"])
    decoded_mb = sum(train.counts) * size[0] * size[1] * 3 / 2 ** 20
    cache = decoded_mb <= config.cache_mb
    log.info("training videos decoded at %dx%d: %.0f MB, %s", *size, decoded_mb,
             "kept in memory after the first epoch" if cache
             else f"over cache_mb={config.cache_mb}: decoded every epoch")
    train_ds = dataset_for(train, clip_len=config.num_frames, size=size, training=True,
                           batch_size=config.batch_size, seed=config.seed, stride_range=config.stride_range,
                           strides=train.strides(config.fps), failures=failures, cache=cache)
    val_ds = dataset_for(val, clip_len=config.num_frames, size=size, training=False,
                         batch_size=config.batch_size, strides=val.strides(config.fps), failures=failures)
    return train_ds, val_ds, len(train.paths)


def make_split(listing, config):
    """split.json's content: the manifest's own `split` column when it has one, else grouped when
    the data has groups (or `split=grouped`), else stratified."""
    method = config.split if config.split != "auto" else ("grouped" if listing.groups else "stratified")
    if listing.splits:
        method = "manifest"
        tr = [i for i, s in enumerate(listing.splits) if s == "train"]
        va = [i for i, s in enumerate(listing.splits) if s == "val"]
        if not tr or not va:
            raise ValueError("the manifest's split column needs both 'train' and 'val' clips")
        log.info("split from the manifest's split column: %d train, %d val", len(tr), len(va))
    elif method == "grouped":
        if not listing.groups:
            raise ValueError("split=grouped needs groups: a 'group' column in the CSV manifest or a videos.txt")
        tr, va = grouped_split(listing.labels, listing.groups, config.val_fraction, config.seed)
        log.info("grouped split: %d groups, none on both sides", len(set(listing.groups)))
    else:
        tr, va = stratified_split(listing.labels, config.val_fraction, config.seed)
    split = {"method": method, "train": tr, "val": va, "val_paths": [listing.paths[i] for i in va]}
    if listing.groups:
        split["val_groups"] = sorted({listing.groups[i] for i in va})
    return split


def init_frame_cnn(core, run_dir):
    """Copy the frame CNN stages of a generative run's encoder into `core`'s frame CNN where
    layer names and weight shapes match (the sora_vaegan encoder is the sora_cls frame CNN
    without its Dense head); returns the names of the layers copied."""
    source = load_run(run_dir)[0]
    if not hasattr(source, "encoder"):
        raise ValueError(f"init_frame_cnn={run_dir}: not a run with an encoder")
    source = source.encoder.get_layer("frame_features").layer
    target = core.get_layer("frame_features").layer
    copied = []
    for layer in source.layers:
        names = [l.name for l in target.layers]
        if layer.weights and layer.name in names:
            twin = target.get_layer(layer.name)
            if [tuple(w.shape) for w in twin.weights] == [tuple(w.shape) for w in layer.weights]:
                twin.set_weights(layer.get_weights())
                copied.append(layer.name)
    if not copied:
        raise ValueError(f"init_frame_cnn={run_dir}: no frame CNN layer matches in name and shape")
    return copied


def _resume(out):
    """(model from last.keras, first epoch to run, best monitored value so far) of run `out`."""
    state = load_json(os.path.join(out, "state.json"))
    log.info("resuming %s from epoch %d", out, state["epoch"] + 2)
    return load_checkpoint(os.path.join(out, "last.keras")), state["epoch"] + 1, state["best"]


def load_checkpoint(path):
    """keras.saving.load_model, with `path` in the error when the file holds no model that
    loads (for example one saved by an earlier design of the model)."""
    try:
        return keras.saving.load_model(path)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def _logs(out, resuming):
    """history.csv (appended to on resume) and TensorBoard under the run."""
    return [keras.callbacks.CSVLogger(os.path.join(out, "history.csv"), append=resuming),
            keras.callbacks.TensorBoard(os.path.join(out, "tb"), write_graph=False)]


def _fit_classifier(module, model_name, config, out, train_ds, val_ds, steps, resuming, verbose):
    """fit() an augmenting trainer around the model; best.keras is the bare model at best val_accuracy."""
    if resuming:
        trainer, initial_epoch, best = _resume(out)
        core = trainer.get_layer(model_name)
    else:
        core = module.build(config)
        if getattr(config, "init_frame_cnn", ""):
            copied = init_frame_cnn(core, config.init_frame_cnn)
            log.info("frame CNN layers %s initialised from %s", ", ".join(copied), config.init_frame_cnn)
        trainer = trainer_for(core, config)
        compile_trainer(trainer, config, steps)
        initial_epoch, best = 0, None
    callbacks = [RunCheckpoint(out, core, best=best), *_logs(out, resuming),
                 keras.callbacks.EarlyStopping("val_accuracy", patience=config.patience, mode="max")]
    if trainer.optimizer.use_ema:  # as compiled: a run resumed from before `ema_momentum` has none
        # The averaged weights are in the model from the end of each epoch (so validation and
        # both checkpoints have them) to the start of the next; training steps use the raw ones.
        callbacks.insert(0, keras.callbacks.SwapEMAWeights(swap_on_epoch=True))
    if initial_epoch < config.epochs:
        trainer.fit(supervised(train_ds), validation_data=supervised(val_ds), epochs=config.epochs,
                    initial_epoch=initial_epoch, callbacks=callbacks, verbose=verbose)


class _SaveAfter(keras.callbacks.Callback):
    """Save the model (atomically) once `epochs` epochs are done."""

    def __init__(self, epochs, path):
        super().__init__()
        self.epochs, self.path = epochs, path

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.epochs:
            atomic_write(self.path, self.model.save)


def _fit_generative(module, model_name, config, out, train_ds, val_ds, steps, resuming, verbose):
    """fit() a model with its own train_step (and optimizers); best.keras at best val_psnr.

    Under `mixed_precision=true` the layers compute in float16 (outputs and losses in float32).
    """
    policy = keras.mixed_precision.global_policy().name
    if config.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        if resuming:
            model, initial_epoch, best = _resume(out)
        else:
            model = module.build(config)
            initial_epoch, best = 0, None
            if config.gan and config.gan_warmup:
                warm = os.path.join(out, "vae_only", f"epoch{config.gan_warmup}.keras")
                vae = load_checkpoint(warm)
                model.encoder.set_weights(vae.encoder.get_weights())
                model.decoder.set_weights(vae.decoder.get_weights())
                initial_epoch = config.gan_warmup
                log.info("encoder and decoder from %s; the discriminator joins at epoch %d", warm, initial_epoch + 1)
                # The discriminator's generated clips are drawn from the prior that sampling uses.
                _fit_prior_in_memory(model, supervised(train_ds))
            model.compile(decay_steps=(config.epochs - initial_epoch) * steps)
        callbacks = [RunCheckpoint(out, model, monitor="val_psnr", best=best, save_trainer=False),
                     *_logs(out, resuming), keras.callbacks.TerminateOnNaN()]
        if config.snapshot_epoch:
            callbacks.append(_SaveAfter(config.snapshot_epoch, os.path.join(out, f"epoch{config.snapshot_epoch}.keras")))
        if initial_epoch < config.epochs:
            model.fit(supervised(train_ds), validation_data=supervised(val_ds), epochs=config.epochs,
                      initial_epoch=initial_epoch, callbacks=callbacks, verbose=verbose)
        if model.stop_training:
            raise FloatingPointError(f"{out}: training stopped on a NaN loss; see history.csv")
        _fit_prior(os.path.join(out, "best.keras"), supervised(train_ds))
    finally:
        keras.mixed_precision.set_global_policy(policy)


def _fit_prior(path, dataset):
    """Fit the sampling prior of the model saved at `path` (see `_fit_prior_in_memory`) and
    save it back atomically."""
    model = load_checkpoint(path)
    _fit_prior_in_memory(model, dataset)
    atomic_write(path, model.save)
    log.info("sampling prior saved: %s", path)


def _fit_prior_in_memory(model, dataset, limit=4096):
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


def _as_sets(config):
    """--set strings that rebuild `config` on any preset."""
    text = lambda v: ",".join(map(str, v)) if isinstance(v, tuple) else str(v)
    return [f"{k}={text(v)}" for k, v in dataclasses.asdict(config).items()]


def _train_companions(model_name, config, data, out, preset, strict, verbose):
    """What a generative run is measured with and starts from, trained into its folder (each
    resumes if begun): `judge/`, a sora_cls on the same data, clip length, frame size and split
    (unless `judge_run`), and `vae_only/`, the same model and data without the discriminator,
    for `epochs` (when `compare_vae`) or just the GAN's `gan_warmup` epochs.
    """
    def run(name, sub, sets, epochs=None):
        path = os.path.join(out, sub)
        state = os.path.join(path, "state.json")
        if not (os.path.isfile(state) and load_json(state).get("finished")):
            log.info("training %s into %s", name, path)
            train(name, data, path, epochs, sets, preset, os.path.isfile(os.path.join(path, "last.keras")),
                  strict, verbose)
        return os.path.abspath(path)

    judge = config.judge_run or run("sora_cls", "judge", [f"{k}={getattr(config, k)}" for k in (
        "num_frames", "image_size", "val_fraction", "split", "seed", "fps")], config.judge_epochs)
    if config.gan and (config.compare_vae or config.gan_warmup):
        # The VAE alone: for comparison (all epochs), and for the GAN's warm-up (its first epochs).
        epochs = config.epochs if config.compare_vae else config.gan_warmup
        run(model_name, "vae_only", _as_sets(config) + [
            "gan=false", "compare_vae=false", f"judge_run={judge}", f"epochs={epochs}",
            f"snapshot_epoch={config.gan_warmup}"])


def default_run_dir(model_name):
    return os.path.join("runs", f"{model_name}-{time.strftime('%Y%m%d-%H%M%S')}")


def train(model_name="sora_cls", data=None, out=None, epochs=None, sets=(), preset=None,
          resume=False, strict=False, verbose=None):
    """Train `model_name`; returns the run directory."""
    module = models.get(model_name)
    out = out or default_run_dir(model_name)
    resuming = resume and os.path.isfile(os.path.join(out, "last.keras"))
    if resume and not resuming:
        raise FileNotFoundError(f"--resume: {out}/last.keras does not exist")
    if epochs is not None:
        if epochs < 1:
            raise ValueError(f"--epochs must be >= 1, got {epochs}")
        sets = [*sets, f"epochs={epochs}"]  # with the other overrides, so they validate together
    if resuming:
        saved = load_json(os.path.join(out, "run.json"))
        config = from_dict(module.Config, load_json(os.path.join(out, "config.json")))
        data = saved["data"]
        config = override(config, sets)
    else:
        if preset not in (None, "tiny", "default"):
            raise ValueError(f"unknown preset {preset!r}: use 'tiny' or 'default'")
        base = module.Config.tiny() if preset == "tiny" else module.Config()
        data = resolve_data(data, preset)
        config = override(base, sets)

    listing = list_clips(data, strict=strict)
    config = dataclasses.replace(config, num_classes=len(listing.classes))
    if getattr(config, "aug_flip", False) and _data_flags(data).get("hflip_changes_label"):
        log.info("%s says a horizontal flip changes the label: flip augmentation off", data)
        config = dataclasses.replace(config, aug_flip=False)
    config.validate()
    os.makedirs(out, exist_ok=True)
    if resuming:
        split = load_json(os.path.join(out, "split.json"))
    else:
        split = make_split(listing, config)
        save_json(os.path.join(out, "split.json"), split)
        save_json(os.path.join(out, "run.json"), {"model": model_name, "data": os.path.abspath(data)})
    save_json(os.path.join(out, "config.json"), dataclasses.asdict(config))
    save_json(os.path.join(out, "classes.json"), listing.classes)

    keras.utils.set_random_seed(config.seed)
    failures = DecodeFailures()
    train_ds, val_ds, n_train = _datasets(config, listing, split, failures)
    steps = max(1, n_train // config.batch_size)
    verbose = verbose if verbose is not None else (1 if sys.stdout.isatty() else 2)
    generative = getattr(module, "TASK", "classify") == "generate"
    if generative:  # first, as the GAN starts from the vae_only twin's warm-up epochs
        _train_companions(model_name, config, data, out, preset, strict, verbose)
    fit = _fit_generative if generative else _fit_classifier
    fit(module, model_name, config, out, train_ds, val_ds, steps, resuming, verbose)
    state = os.path.join(out, "state.json")
    if os.path.isfile(state):
        save_json(state, {**load_json(state), "finished": True})
    report = listing.summary()
    report["decode_failures"] = [{"path": p, "reason": r} for p, r in failures.paths]
    report["skipped"] += len(failures.paths)
    save_json(os.path.join(out, "data_report.json"), report)
    if report["skipped"]:
        log.warning("%d file(s) skipped; see %s", report["skipped"], os.path.join(out, "data_report.json"))
    return out


def load_run(run_dir):
    """(model, config, classes, run info) of a finished run, from its best checkpoint. The config
    is the one the model was built with: for a run saved before a field existed, the value that
    field had then (as the model's own loading fills it in), not today's default."""
    info = load_json(os.path.join(run_dir, "run.json"))
    models.get(info["model"])  # imports the model's module, whose classes the checkpoint names
    classes = load_json(os.path.join(run_dir, "classes.json"))
    path = os.path.join(run_dir, "best.keras")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{run_dir}: no best.keras (did training finish an epoch?)")
    model = load_checkpoint(path)
    return model, model.config, classes, info


def run_summary(run_dir):
    """The run's main files that exist, as JSON."""
    return json.dumps({k: os.path.join(run_dir, v) for k, v in (
        ("run", ""), ("metrics", "metrics.json"), ("confusion_matrix", "confusion_matrix.png"),
        ("training_curves", "training_curves.png"), ("tensorboard", "tb"))
        if os.path.exists(os.path.join(run_dir, v))}, indent=2)


