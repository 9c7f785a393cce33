"""`train --strategy`: which `tf.distribute` strategy a run trains under, and what each worker
writes. Launchers (Kubeflow's TFJob, Ray Train's TensorflowTrainer, a shell script) start one
process per worker with `TF_CONFIG` naming the cluster and the worker's own task.

- `auto`: MultiWorkerMirroredStrategy when TF_CONFIG names more than one worker, MirroredStrategy
  when there is more than one GPU, else the default strategy;
- the global batch is the config's `batch_size` per replica times the replicas;
- only the chief (task `chief`, else worker 0) writes the run folder; every other worker runs the
  same training into a scratch folder of its own, removed when it finishes (collectives need
  every worker to take part in every step, saves included);
- each worker backs up its state at the end of every epoch (`keras.callbacks.BackupAndRestore`,
  the chief in RUN/backup, the others beside their scratch), so a restarted worker continues
  from the epoch the cluster had finished.
"""
import contextlib
import json
import os

STRATEGIES = ("auto", "default", "mirrored", "multiworker")


def cluster():
    """(workers in TF_CONFIG's cluster, this task's type, its index); (0, None, 0) without one."""
    raw = os.environ.get("TF_CONFIG", "")
    if not raw:
        return 0, None, 0
    try:
        spec = json.loads(raw)
        nodes = spec.get("cluster", {})
        task = spec.get("task", {})
        workers = len(nodes.get("chief", [])) + len(nodes.get("worker", []))
        return workers, task.get("type"), int(task.get("index", 0))
    except (ValueError, AttributeError, TypeError) as e:
        raise ValueError(f"TF_CONFIG is not a cluster spec ({e}): {raw[:200]}") from None


def strategy_for(name):
    """The tf.distribute strategy `name` picks (see the module's docstring)."""
    import tensorflow as tf

    if name not in STRATEGIES:
        raise ValueError(f"--strategy must be one of {STRATEGIES}, got {name!r}")
    workers, _, _ = cluster()
    if name == "auto":
        name = ("multiworker" if workers > 1 else
                "mirrored" if len(tf.config.list_physical_devices("GPU")) > 1 else "default")
    if name == "multiworker":
        if workers < 1:
            raise ValueError("--strategy multiworker needs TF_CONFIG naming the cluster and this worker's task")
        _keras_multiworker_fixes()
        # RING: gRPC collectives, which work on CPUs and across machines alike.
        options = tf.distribute.experimental.CommunicationOptions(
            implementation=tf.distribute.experimental.CommunicationImplementation.RING)
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    if name == "mirrored":
        _keras_multiworker_fixes()  # the first-batch build fails across GPUs alike (not run here: no GPUs)
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def _keras_multiworker_fixes():
    """Two places where Keras 3.15's TensorFlow trainer breaks under MultiWorkerMirroredStrategy
    (keras-team/keras#20585, tensorflow/tensorflow#72388: `model.fit` fails on the first batch),
    mended for this process:
    - `_maybe_symbolic_build` averages the first data batch across workers to build the model
      (uint8 clips and int labels through a collective MEAN fail); our models are built when
      they are made, and their optimizers when compiled;
    - `reduce_per_replica` averages the scalar logs with `axis=0`, which a scalar does not have."""
    import tensorflow as tf
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer

    if getattr(trainer, "_sora_tf_mended", False):
        return
    trainer.TensorFlowTrainer._maybe_symbolic_build = lambda self, iterator=None, data_batch=None: None
    original = trainer.reduce_per_replica

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and trainer._collective_all_reduce_multi_worker(strategy):
            def mean(v):
                first = v.values[0] if isinstance(v, tf.distribute.DistributedValues) else v
                return strategy.reduce("MEAN", v, axis=None if first.shape.rank == 0 else 0)
            return tree.map_structure(mean, values)
        return original(values, strategy, reduction)

    trainer.reduce_per_replica = reduce_per_replica
    trainer._sora_tf_mended = True


def moving_statistics_sync():
    """A callback that averages every BatchNormalization's moving mean and variance over the
    workers at the end of each epoch, before anything is saved: each worker updates them from its
    own shard (Keras 3 syncs them only for layers built with `synchronized=True`), so without it
    the workers' models would differ there while their trained weights agree."""
    import keras
    import tensorflow as tf

    class SyncMovingStatistics(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            strategy = tf.distribute.get_strategy()
            for v in self.model.non_trainable_variables:
                if v.path.endswith(("moving_mean", "moving_variance")):
                    local = strategy.run(lambda x=v: tf.identity(x.value))
                    v.assign(strategy.reduce("MEAN", local, axis=None))

    return SyncMovingStatistics()


def weights_digest(model):
    """A short hash of `model`'s weights: workers kept in sync log the same one."""
    import hashlib

    digest = hashlib.sha256()
    for w in model.get_weights():
        digest.update(w.tobytes())
    return digest.hexdigest()[:16]


def is_chief():
    """Whether this process writes the run folder: no cluster, the chief, or worker 0 without one."""
    workers, task_type, index = cluster()
    if workers <= 1 or task_type in (None, "chief"):
        return True
    spec = json.loads(os.environ["TF_CONFIG"])
    return task_type == "worker" and index == 0 and not spec["cluster"].get("chief")


def scratch_dir(out):
    """A non-chief worker's own folder for what the chief writes to `out`: beside it, named by
    the worker's task, so that a restarted worker finds its backup there."""
    _, task_type, index = cluster()
    return os.path.join(os.path.dirname(os.path.abspath(out)), f".{os.path.basename(os.path.abspath(out))}"
                        f"-{task_type}{index}")


def sharded(ds, data):
    """`ds` with the auto-shard policy for its source: FILE for prepared TFRecord shards (each
    worker reads its own shard files, nothing twice), DATA for video files (the source is a
    list of paths in memory, not files tf.data reads, so each worker keeps every N-th clip)."""
    import tensorflow as tf

    from sora_tf.data.prepared import is_prepared

    if not isinstance(ds, tf.data.Dataset):  # evaluated by a callback, not through fit (sora_det's frames)
        return ds
    policy = tf.data.experimental.AutoShardPolicy
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = policy.FILE if is_prepared(data) else policy.DATA
    return ds.with_options(options)


@contextlib.contextmanager
def worker_errors(out):
    """In a multi-worker run (`out` given), a peer that stops (killed, preempted) aborts every
    worker's collectives: say so, and how to go on, instead of a traceback."""
    import tensorflow as tf

    try:
        yield
    except (tf.errors.UnavailableError, tf.errors.CancelledError, tf.errors.DeadlineExceededError) as e:
        if out is None:
            raise
        first = str(e).strip().splitlines()[0][:300]
        raise ConnectionError(f"a worker of the cluster stopped ({first}); start every worker again with the same "
                              f"command: training goes on from the last finished epoch, backed up in "
                              f"{os.path.join(out, 'backup')}") from None
