"""Training under tf.distribute: two worker processes on localhost (MultiWorkerMirroredStrategy),
ports chosen free at run time, loopback only; the strategy choice; mixed precision and XLA."""
import csv
import json
import os
import re
import socket
import subprocess
import sys
import time

import pytest

from sora_tf.train import distribute


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_workers(data, out, epochs, ports=None):
    """Two `train --strategy multiworker` processes (batch 4 per replica: a global batch of 8,
    the tiny preset's), their stdout+stderr in OUT.w<i>.log; returns (processes, ports)."""
    ports = ports or [_free_port(), _free_port()]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for i in range(2):
        env = {**os.environ, "PYTHONUNBUFFERED": "1",
               "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})}
        log = open(f"{out}.w{i}.log", "w")
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "sora_tf", "train", "--preset", "tiny", "--data", data, "--out", out,
             "--strategy", "multiworker", "--epochs", str(epochs), "--set", "batch_size=4"],
            stdout=log, stderr=subprocess.STDOUT, env=env))
    return procs, ports


def _wait(procs, timeout=240):
    try:
        return [p.wait(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()


def _log(out, i):
    with open(f"{out}.w{i}.log") as f:
        return f.read()


def _history(run):
    with open(os.path.join(run, "history.csv")) as f:
        return list(csv.DictReader(f))


def _digest(text):
    return re.findall(r"worker worker\d: weights ([0-9a-f]+)", text)


@pytest.mark.slow
def test_two_workers_train_in_sync_like_one_with_the_same_global_batch(tiny_data, tiny_run, tmp_path):
    out = str(tmp_path / "run")
    codes = _wait(_start_workers(tiny_data, out, epochs=2)[0])
    logs = [_log(out, i) for i in range(2)]
    assert codes == [0, 0], logs[codes.index(max(codes))][-3000:]
    # The same weights on both workers at the end (gradients all-reduced, moving statistics averaged).
    assert len(_digest(logs[0])) == len(_digest(logs[1])) == 1 and _digest(logs[0]) == _digest(logs[1])
    # The chief's run folder is complete and evaluated; the other worker's scratch is gone.
    for name in ("best.keras", "last.keras", "metrics.json", "history.csv", "split.json", "config.json"):
        assert os.path.isfile(os.path.join(out, name)), name
    assert not os.path.exists(distribute_scratch(out, 1)) and not os.path.exists(os.path.join(out, "backup"))
    assert "worker finished" in logs[1]
    assert json.load(open(os.path.join(out, "config.json")))["batch_size"] == 4  # per replica, as given
    # Against one worker with the same global batch (the tiny run: 8 a step, 2 epochs, same data):
    # the same losses within noise (2 workers see the clips in another order).
    two, one = _history(out), _history(tiny_run)
    assert len(two) == len(one) == 2
    for a, b in zip(two, one):
        assert abs(float(a["val_loss"]) - float(b["val_loss"])) < 0.05 * float(b["val_loss"])
        assert abs(float(a["loss"]) - float(b["loss"])) < 0.1 * float(b["loss"])


def distribute_scratch(out, index):
    return os.path.join(os.path.dirname(out), f".{os.path.basename(out)}-worker{index}")


@pytest.mark.slow
def test_a_killed_worker_restarts_from_the_backup(tiny_data, tmp_path):
    out = str(tmp_path / "run")
    procs, ports = _start_workers(tiny_data, out, epochs=4)
    try:
        deadline = time.time() + 180
        while "Epoch 2/4" not in _log(out, 1) and procs[1].poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert "Epoch 2/4" in _log(out, 1), _log(out, 1)[-3000:]
        procs[1].kill()  # worker 1 dies during its second epoch
    finally:
        codes = _wait(procs)
    assert codes[0] != 0  # the chief's collectives are aborted: it stops, and says how to go on
    assert "a worker of the cluster stopped" in _log(out, 0) and "Traceback" not in _log(out, 0)
    backup = os.path.join(out, "backup", "training_metadata.json")
    assert json.load(open(backup))["epoch"] == 1  # one epoch finished and backed up: go on from the next
    first_epochs = _history(out)
    # The launcher starts both again, with the same command: training goes on from the backup.
    codes = _wait(_start_workers(tiny_data, out, epochs=4, ports=ports)[0])
    logs = [_log(out, i) for i in range(2)]
    assert codes == [0, 0], logs[codes.index(max(codes))][-3000:]
    assert "Epoch 1/4" not in logs[0] and "Epoch 2/4" in logs[0]  # not from the start
    assert _digest(logs[0]) == _digest(logs[1])
    history = _history(out)
    assert [int(r["epoch"]) for r in history] == [0, 1, 2, 3] and history[0] == first_epochs[0]
    assert os.path.isfile(os.path.join(out, "metrics.json")) and not os.path.exists(os.path.join(out, "backup"))
    assert not os.path.exists(distribute_scratch(out, 1))


def test_the_strategy_follows_tf_config(monkeypatch):
    import tensorflow as tf

    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert distribute.cluster() == (0, None, 0) and distribute.is_chief()
    assert distribute.strategy_for("auto") is tf.distribute.get_strategy()  # one CPU: the default
    assert isinstance(distribute.strategy_for("mirrored"), tf.distribute.MirroredStrategy)
    with pytest.raises(ValueError, match="needs TF_CONFIG"):
        distribute.strategy_for("multiworker")
    with pytest.raises(ValueError, match="--strategy must be one of"):
        distribute.strategy_for("parameter_server")
    cluster = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 1}}))
    assert distribute.cluster() == (2, "worker", 1) and not distribute.is_chief()
    assert distribute.scratch_dir("/runs/x") == "/runs/.x-worker1"
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {**cluster, "chief": ["127.0.0.1:3"]},
                                                "task": {"type": "worker", "index": 0}}))
    assert not distribute.is_chief()  # with a chief, worker 0 is not it
    frames = object()  # sora_det's validation frames: evaluated by a callback, left as they are
    assert distribute.sharded(frames, "data") is frames
    options = distribute.sharded(tf.data.Dataset.range(4), "no/such/prepared").options()
    assert options.experimental_distribute.auto_shard_policy == tf.data.experimental.AutoShardPolicy.DATA
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ValueError, match="TF_CONFIG is not a cluster spec"):
        distribute.cluster()


@pytest.mark.slow
# sora_det and sora_vaegan: by hand (docs/distribute.md), for CI time; sora_det's float32 heads
# and box decoding are what mixed precision needed there.
@pytest.mark.parametrize("model", ["sora_cls"])
def test_every_model_trains_in_mixed_precision_with_xla_and_exports_float32(model, tmp_path):
    import keras

    from sora_tf import models
    from sora_tf.export.exporter import in_float32
    from sora_tf.runs import load_run
    from sora_tf.models.precision import computing
    from sora_tf.train.run import train

    sets = ["mixed_precision=true", "jit_compile=true"]
    run = train(model, None, str(tmp_path / "run"), epochs=1, sets=sets, preset="tiny", verbose=0)
    assert keras.mixed_precision.global_policy().name == "float32"  # restored after the run
    trained, config, _, _ = load_run(run)
    assert config.mixed_precision and config.jit_compile
    # What the run built computes in 16 bits (bfloat16 on a CPU) ...
    with computing(config):
        built = models.get(model).build(config)
    assert any(layer.dtype_policy.name == "mixed_bfloat16" for layer in built._flatten_layers())
    # ... what export takes is float32: a checkpoint rebuilds from its config under float32, and
    # a model in 16 bits is copied into a float32 build of itself, weight for weight.
    assert all(layer.dtype_policy.name == "float32" for layer in trained._flatten_layers())
    built.set_weights(trained.get_weights())
    exported = in_float32(built, model)
    assert all(layer.dtype_policy.name == "float32" for layer in exported._flatten_layers())
    for a, b in zip(exported.get_weights(), trained.get_weights()):
        assert (a == b).all()
