"""A training run: the model's task prepares the data (listing, split, datasets) and fits the model
into the run folder (see `sora_tf.runs` for what the folder holds)."""
import dataclasses
import logging
import os
import sys

import shutil

import keras
import tensorflow as tf

from sora_tf import models, train as tasks
from sora_tf.atomic import save_json
from sora_tf.config import from_dict, override
from sora_tf.models.precision import computing
from sora_tf.runs import default_run_dir, load_json
from sora_tf.train import distribute
from sora_tf.train.fitting import Job

log = logging.getLogger("sora_tf.train")


def newest_run(model_name, root="runs"):
    """The most recently changed `root/<model_name>-*` run with a last.keras, or an error."""
    found = [os.path.join(root, d) for d in os.listdir(root) if d.startswith(f"{model_name}-")
             and os.path.isfile(os.path.join(root, d, "last.keras"))] if os.path.isdir(root) else []
    if not found:
        raise FileNotFoundError(f"--resume: no run of {model_name} under {root}/ to resume; name one with --out")
    return max(found, key=lambda d: os.path.getmtime(os.path.join(d, "last.keras")))


def _saved_config(module, path):
    values = {**getattr(module, "ADDED_FIELDS", {}), **load_json(path)}
    try:
        config = from_dict(module.Config, values)
        config.validate()
    except (TypeError, ValueError, AttributeError) as e:
        raise ValueError(f"{path}: not a config of this model ({e})") from None
    return config


def train(model_name, data=None, out=None, epochs=None, sets=(), preset=None,
          resume=False, strict=False, verbose=None, strategy="default"):
    """Train `model_name` through its task's `fit` under the tf.distribute `strategy` (see
    `distribute.py`); returns the run directory, or None on a worker other than the chief."""
    # A companion run trained inside another (the VAE-GAN's twin and judge) takes its strategy;
    # otherwise the strategy comes first: multi-worker collectives are set up at program start.
    nested = tf.distribute.has_strategy()
    dist = tf.distribute.get_strategy() if nested else distribute.strategy_for(strategy)
    module = models.get(model_name)
    task = tasks.task(model_name)
    if resume and out is None:
        out = newest_run(model_name)
        log.info("--resume without --out: the newest run of %s, %s", model_name, out)
    out = out or default_run_dir(model_name)
    multiworker = isinstance(dist, tf.distribute.MultiWorkerMirroredStrategy)
    lead = multiworker and not nested  # the run that owns this worker's folder (a companion's is inside it)
    if lead and not distribute.is_chief():
        chief_out, out = out, distribute.scratch_dir(out)
        log.info("worker %s%d: the chief writes %s; this worker writes %s, removed at the end",
                 *distribute.cluster()[1:], chief_out, out)
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"--out {out}: a file is there; a run is a folder")
    resuming = resume and os.path.isfile(os.path.join(out, "last.keras"))
    if resume and not resuming:
        raise FileNotFoundError(f"--resume: {out}/last.keras does not exist")
    if epochs is not None:
        if epochs < 1:
            raise ValueError(f"--epochs must be >= 1, got {epochs}")
        sets = [*sets, f"epochs={epochs}"]  # with the other overrides, so they validate together
    if resuming:
        saved = load_json(os.path.join(out, "run.json"), needs=("model", "data"))
        if saved["model"] != model_name:
            raise ValueError(f"--resume: {out} is a {saved['model']} run, not {model_name}")
        config = _saved_config(module, os.path.join(out, "config.json"))
        data = saved["data"]
        config = override(config, sets)
        first_epoch = load_json(os.path.join(out, "state.json"), needs=("epoch", "best"))["epoch"] + 1
        log.info("resuming %s from epoch %d", out, first_epoch + 1)
    else:
        if preset not in (None, "tiny", "default"):
            raise ValueError(f"unknown preset {preset!r}: use 'tiny' or 'default'")
        base = module.Config.tiny() if preset == "tiny" else module.Config()
        data = data or task.default_data(preset)
        config = override(base, sets)
        first_epoch = 0

    if not os.path.exists(data):  # before the run folder is made: a typo leaves no empty run behind
        raise FileNotFoundError(f"{os.path.abspath(data)}: data source does not exist")
    os.makedirs(out, exist_ok=True)
    if not resuming:
        save_json(os.path.join(out, "run.json"), {"model": model_name, "data": os.path.abspath(data)})
    keras.utils.set_random_seed(config.seed)
    replicas = dist.num_replicas_in_sync
    # The data is batched by the global batch: the config's batch_size per replica, times replicas.
    prepared = task.prepare(dataclasses.replace(config, batch_size=config.batch_size * replicas), data, out,
                            resuming, first_epoch, strict)
    config = dataclasses.replace(prepared.config, batch_size=config.batch_size)
    train_ds, val_ds = prepared.train_ds, prepared.val_ds
    if multiworker:
        train_ds, val_ds = (ds if ds is None else distribute.sharded(ds, data) for ds in (train_ds, val_ds))
    save_json(os.path.join(out, "config.json"), dataclasses.asdict(config))
    save_json(os.path.join(out, "classes.json"), prepared.classes)
    # The dtype policy of the models the task builds (mixed_precision), under the strategy.
    with computing(config), dist.scope(), distribute.worker_errors(out if multiworker else None):
        task.fit(Job(module=module, model_name=model_name, config=config, out=out, data=data, preset=preset,
                     strict=strict, train_ds=train_ds, val_ds=val_ds, steps=prepared.steps,
                     train_labels=prepared.train_labels,
                     resuming=resuming, verbose=verbose if verbose is not None else (1 if sys.stdout.isatty() else 2),
                     train=train, backup=os.path.join(out, "backup") if multiworker else None))
    state = os.path.join(out, "state.json")
    if os.path.isfile(state):
        save_json(state, {**load_json(state), "finished": True})
    report = prepared.report()
    save_json(os.path.join(out, "data_report.json"), report)
    if report.get("skipped"):
        log.warning("%d file(s) skipped; see %s", report["skipped"], os.path.join(out, "data_report.json"))
    if lead:
        from sora_tf.runs import load_checkpoint
        _, task_type, index = distribute.cluster()
        log.info("worker %s%d: weights %s", task_type, index,
                 distribute.weights_digest(load_checkpoint(os.path.join(out, "last.keras"))))
        if not distribute.is_chief():
            shutil.rmtree(out, ignore_errors=True)
            return None
    return out
