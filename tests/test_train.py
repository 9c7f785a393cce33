"""The run end to end on the tiny preset: artifacts, metrics, resume, eval determinism, CLI."""
import csv
import dataclasses
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from sora_tf.cli import main
from sora_tf.export.runtime import load_predictor, predict_videos
from sora_tf.data.pipeline import eval_clip
from sora_tf.models import sora_cls
from sora_tf.runs import load_checkpoint, load_clips, load_run, run_listing
from sora_tf.train.evaluate import evaluate
from sora_tf.train.fitting import RunCheckpoint
from sora_tf.train.run import train
from tests.conftest import history_epochs


def test_run_artifacts(tiny_run):
    for name in ("config.json", "classes.json", "split.json", "best.keras", "last.keras",
                 "state.json", "history.csv", "data_report.json"):
        assert os.path.isfile(os.path.join(tiny_run, name)), name
    assert os.listdir(os.path.join(tiny_run, "tb"))
    config = json.load(open(os.path.join(tiny_run, "config.json")))
    assert config["num_classes"] == 7 and config["pixel_mean"] == [0.5, 0.5, 0.5]
    assert config["aug_flip"] is False, "the generated data says flips change labels"
    with open(os.path.join(tiny_run, "state.json")) as f:  # monitor=auto, under 200 validation clips
        assert json.load(f)["monitor"] == "last"
    assert not [f for f in os.listdir(tiny_run) if f.startswith(".tmp-")]


def test_evaluate_writes_metrics_and_is_deterministic(tiny_run):
    first = evaluate(tiny_run)
    second = evaluate(tiny_run)
    assert first == second
    metrics = json.load(open(os.path.join(tiny_run, "metrics.json")))
    assert set(metrics) >= {"accuracy", "macro_f1", "per_class", "confusion_matrix", "top2_accuracy",
                            "top3_accuracy"}
    assert metrics["num_clips"] == 7
    assert sum(map(sum, metrics["confusion_matrix"]["rows_true_cols_pred"])) == 7
    multi = metrics["multi_view"]
    assert multi["temporal_clips"] == 3 and multi["spatial_crops"] == 3
    assert 0 <= multi["accuracy"] <= 1 and sum(map(sum, multi["confusion_matrix"]["rows_true_cols_pred"])) == 7
    assert metrics["single_view"]["accuracy"] == metrics["accuracy"]
    recalls = [c["recall"] for c in metrics["per_class"].values() if c["support"]]
    assert metrics["balanced_accuracy"] == pytest.approx(np.mean(recalls))
    # the held-out test clips, beside validation: one a class, on no other side of the split
    split = json.load(open(os.path.join(tiny_run, "split.json")))
    parts = [set(split[k]) for k in ("train", "val", "test")]
    assert len(split["test"]) == 7 and not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert metrics["split"] == "validation" and metrics["test"]["num_clips"] == 7
    assert metrics["test"]["per_class"]["left"]["support"] == 1
    assert metrics["class_weight"] == {"setting": "auto", "weights": None}  # balanced classes: none needed
    for png in ("confusion_matrix.png", "training_curves.png"):
        assert os.path.getsize(os.path.join(tiny_run, png)) > 1000


def test_resume_continues_from_last_epoch(tiny_run, tmp_path):
    run = str(tmp_path / "resumed")
    shutil.copytree(tiny_run, run)
    assert history_epochs(run) == [0, 1]
    train("sora_cls", out=run, epochs=3, resume=True, verbose=0)
    assert history_epochs(run) == [0, 1, 2]
    assert json.load(open(os.path.join(run, "state.json")))["epoch"] == 2


def test_weight_average_is_what_is_validated_checkpointed_and_resumed(tiny_data, tmp_path):
    run = str(tmp_path / "ema")
    train("sora_cls", tiny_data, run, epochs=2, preset="tiny", sets=["ema_momentum=0.5"], verbose=0)
    state = json.load(open(os.path.join(run, "state.json")))
    # best.keras holds the weights validation saw: on the validation clips it gives the logged
    # val_loss of its epoch (the raw weights, which differ from their average, would not)
    model, config, classes, info = load_run(run)
    clips, labels = load_clips(run_listing(run, classes, info), config)
    probs = np.asarray(model(clips, training=False)["probabilities"])
    loss = -np.mean(np.log(probs[np.arange(len(labels)), labels]))
    logged = {int(r["epoch"]): float(r["val_loss"]) for r in csv.DictReader(open(os.path.join(run, "history.csv")))}
    assert loss == pytest.approx(logged[state["best_epoch"]], rel=1e-4)
    train("sora_cls", out=run, epochs=3, resume=True, verbose=0)
    assert history_epochs(run) == [0, 1, 2]


def _weights(path):
    model = load_checkpoint(path)
    averages = getattr(getattr(model, "optimizer", None), "_model_variables_moving_average", None) or []
    return [w.numpy() for w in model.weights] + [a.numpy() for a in averages if a is not None]


def test_killed_run_resumed_equals_an_uninterrupted_one(tiny_data, tmp_path, monkeypatch):
    """With the weight average on: the same weights, average, optimizer state, step count and
    logged losses as a run never killed (last.keras resumes from the raw weights, the data
    stream from where it was)."""
    sets = ["ema_momentum=0.9", "patience=5"]
    whole = train("sora_cls", tiny_data, str(tmp_path / "whole"), epochs=3, preset="tiny", sets=sets, verbose=0)
    save = RunCheckpoint.on_epoch_end

    def killed_after_the_second_epoch(self, epoch, logs=None):
        save(self, epoch, logs)
        if epoch == 1:
            raise KeyboardInterrupt
    monkeypatch.setattr(RunCheckpoint, "on_epoch_end", killed_after_the_second_epoch)
    cut = str(tmp_path / "cut")
    with pytest.raises(KeyboardInterrupt):
        train("sora_cls", tiny_data, cut, epochs=3, preset="tiny", sets=sets, verbose=0)
    monkeypatch.undo()
    train("sora_cls", out=cut, resume=True, verbose=0)
    for name in ("last.keras", "best.keras"):
        for a, b in zip(_weights(os.path.join(whole, name)), _weights(os.path.join(cut, name)), strict=True):
            np.testing.assert_allclose(a, b, atol=1e-5, err_msg=name)
    steps = [int(load_checkpoint(os.path.join(run, "last.keras")).optimizer.iterations) for run in (whole, cut)]
    per_epoch = len(json.load(open(os.path.join(whole, "split.json")))["train"]) // 8  # whole batches of 8
    assert steps[0] == steps[1] == 3 * per_epoch == 3 * 3  # Keras took an extra step an epoch once
    rows = [list(csv.DictReader(open(os.path.join(run, "history.csv")))) for run in (whole, cut)]
    for a, b in zip(*rows, strict=True):
        assert float(a["loss"]) == pytest.approx(float(b["loss"]), rel=1e-5)


def test_same_command_same_run_readable_by_others(tiny_data, tmp_path):
    umask = os.umask(0o022)
    try:
        runs = [train("sora_cls", tiny_data, str(tmp_path / name), epochs=1, preset="tiny", verbose=0)
                for name in ("a", "b")]
    finally:
        os.umask(umask)
    for a, b in zip(*[_weights(os.path.join(run, "last.keras")) for run in runs], strict=True):
        np.testing.assert_array_equal(a, b)
    for name in ("best.keras", "last.keras", "config.json", "split.json", "state.json", "data_report.json"):
        assert os.stat(os.path.join(runs[0], name)).st_mode & 0o777 == 0o644, name


def test_class_weights():
    from sora_tf.models import sora_cls
    from sora_tf.train.classify import class_weights

    config = sora_cls.Config(num_classes=3)
    assert class_weights(config, [0, 0, 1, 1, 2, 2, 2]) is None  # auto: within 1.5x
    skewed = [0] * 8 + [1] * 2 + [2] * 2
    weights = class_weights(config, skewed)
    assert weights == pytest.approx({0: 0.5, 1: 2.0, 2: 2.0})  # each class weighs as much in all
    assert class_weights(config.__class__(num_classes=3, class_weight="none"), skewed) is None
    assert class_weights(config.__class__(num_classes=3, class_weight="balanced"), [0, 0, 1, 1, 2, 2, 2]) \
        == pytest.approx({0: 7 / 6, 1: 7 / 6, 2: 7 / 9})


def test_label_smoothing_trains_on_soft_labels_and_validates_on_whole_ones():
    import tensorflow as tf
    from sora_tf.models import sora_cls
    from sora_tf.train import classify

    config = dataclasses.replace(sora_cls.Config.tiny(), num_classes=3, label_smoothing=0.3)
    x = np.random.default_rng(0).integers(0, 256, (4, config.num_frames, config.image_size, config.image_size, 3))
    ds = tf.data.Dataset.from_tensors({"frames": x.astype("uint8"), "label": np.array([0, 1, 2, 1])})
    _, labels = next(iter(classify.labelled(ds, config)))
    np.testing.assert_array_equal(labels, np.eye(3)[[0, 1, 2, 1]])  # smoothing is the loss's, not the data's
    trainer = classify.trainer(sora_cls.build(config), config, 1)
    assert trainer.loss.get_config()["label_smoothing"] == 0.3
    history = trainer.fit(classify.training_data(ds, config), validation_data=classify.labelled(ds, config),
                          epochs=1, verbose=0).history
    assert {"accuracy", "val_accuracy", "loss", "val_loss"} <= set(history)
    # The run's loss smooths: a confident right answer still costs (the targets are 0.8 / 0.1 / 0.1).
    assert float(trainer.loss(np.eye(3)[[0]], np.array([[1 - 2e-7, 1e-7, 1e-7]]))) > 1.0


def test_macro_auc_is_sklearns_one_vs_rest_roc_auc():
    from sklearn.metrics import roc_auc_score
    from sora_tf.train.classify import MacroAUC

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 300)
    probs = rng.dirichlet([1, 1, 1], 300)
    probs[np.arange(300), labels] += 0.3
    probs /= probs.sum(1, keepdims=True)
    weights = rng.uniform(0.5, 2.0, 300)
    expected = roc_auc_score(labels, probs, multi_class="ovr", sample_weight=weights)
    for given in (labels, labels[:, None], np.eye(3)[labels] * 0.7 + 0.1):  # indices, a column, smoothed one-hot
        metric = MacroAUC(3)
        metric.update_state(given, probs, sample_weight=weights)
        assert float(metric.result()) == pytest.approx(expected, abs=2e-3)
    assert MacroAUC.from_config(MacroAUC(3).get_config()).num_classes == 3


def test_checkpoint_of_the_last_epoch_runs_the_whole_schedule(tiny_data, tmp_path, monkeypatch):
    run = str(tmp_path / "last")
    train("sora_cls", tiny_data, run, preset="tiny", sets=["monitor=last", "epochs=3", "patience=1"])
    assert history_epochs(run) == [0, 1, 2]  # no early stop
    with open(os.path.join(run, "state.json")) as f:
        state = json.load(f)
    assert state["monitor"] == "last" and state["best_epoch"] == 2
    with open(os.path.join(run, "history.csv")) as f:  # the ranking is logged beside the accuracy
        assert all(0.0 <= float(r["val_auc"]) <= 1.0 for r in csv.DictReader(f))
    import sora_tf.train.clips
    monkeypatch.setattr(sora_tf.train.clips, "SMALL_VALIDATION", 1)  # a validation part that can pick
    run = str(tmp_path / "auto")
    train("sora_cls", tiny_data, run, preset="tiny", sets=["epochs=1"])
    with open(os.path.join(run, "state.json")) as f:
        assert json.load(f)["monitor"] == "val_accuracy"


def test_predict_samples_clips_as_evaluation_does(tiny_data, tmp_path):
    """A run trained at 100 frames per second (above the videos' own rate: T consecutive frames):
    evaluation takes its clip at that rate, and so does predict."""
    from sora_tf.data.pipeline import dataset_for

    run = train("sora_cls", tiny_data, str(tmp_path / "fps"), epochs=1, preset="tiny", sets=["fps=100"], verbose=0)
    model, config, classes, info = load_run(run)
    listing = run_listing(run, classes, info)
    batch = next(iter(dataset_for(listing, clip_len=config.num_frames, size=(config.image_size,) * 2,
                                  training=False, batch_size=1, strides=listing.strides(config.fps))))
    video = batch["path"][0].numpy().decode()
    clip = eval_clip(video, config.num_frames, (config.image_size,) * 2, config.fps)
    assert (clip == batch["frames"][0].numpy()).all()
    assert not (clip == eval_clip(video, config.num_frames, (config.image_size,) * 2)).all()  # not the whole video
    [(_, top)] = predict_videos(load_predictor(run), [video], top_k=1)
    probs = np.asarray(model(batch["frames"], training=False)["probabilities"])[0]
    assert top[0] == (classes[int(probs.argmax())], pytest.approx(float(probs.max()), abs=1e-5))


def test_weight_average_warms_up():
    """After n steps the average's momentum is min(ema_momentum, (1 + n) / (3 + n)): a short run
    keeps weights near the trained ones, where Keras's own average (0.99 from the second step)
    would keep mostly the initial ones."""
    import keras
    from keras import ops
    from sora_tf.train.fitting import AdamWarmEMA
    w = keras.Variable(np.zeros(3, "float32"))
    optimizer = AdamWarmEMA(0.1, use_ema=True, ema_momentum=0.99)
    optimizer.build([w])
    expected = None
    for n in range(40):
        optimizer.apply_gradients([(ops.ones(3), w)])
        raw = float(w.numpy()[0])
        momentum = min(0.99, (1 + n) / (3 + n)) if n else 0.0
        expected = raw if expected is None else momentum * expected + (1 - momentum) * raw
    optimizer.finalize_variable_values([w])  # the model's variables take the average
    average = float(w.numpy()[0])
    assert average == pytest.approx(expected, rel=1e-5)
    assert abs(average - raw) < abs(average - 0.0)  # nearer the trained weight than the initial one


def test_resume_of_a_run_from_before_the_weight_average(tiny_run, tmp_path):
    run = str(tmp_path / "older")
    shutil.copytree(tiny_run, run)
    path = os.path.join(run, "config.json")
    config = json.load(open(path))
    del config["ema_momentum"]  # its config.json predates the field, whose default is on
    json.dump(config, open(path, "w"))
    train("sora_cls", out=run, epochs=3, resume=True, verbose=0)
    assert history_epochs(run) == [0, 1, 2]


def test_a_resumed_run_keeps_the_values_of_fields_added_after_it(tiny_data, tmp_path):
    run = str(tmp_path / "older")  # trained as runs were before the fields, which the config then lacks
    train("sora_cls", tiny_data, run, epochs=2, preset="tiny", verbose=0, sets=["pooling=last", "aug_warp_fraction=1"])
    path = os.path.join(run, "config.json")
    config = json.load(open(path))
    for key in sora_cls.ADDED_FIELDS:
        del config[key]
    json.dump(config, open(path, "w"))
    train("sora_cls", out=run, epochs=3, resume=True, verbose=0)
    resumed = json.load(open(path))
    assert {k: resumed[k] for k in sora_cls.ADDED_FIELDS} == {"pooling": "last", "aug_warp_fraction": 1.0,
                                                              "normal_flow": False}


def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="last.keras"):
        train("sora_cls", out=str(tmp_path / "none"), resume=True)


def test_predict_and_cli(tiny_run, tiny_data, tmp_path, capsys):
    video = os.path.join(tiny_data, "left", sorted(os.listdir(os.path.join(tiny_data, "left")))[0])
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"nope")
    results = dict(predict_videos(load_predictor(tiny_run), [video, str(bad)], top_k=3))
    model, config, classes, _ = load_run(tiny_run)
    probs = np.asarray(model(eval_clip(video, config.num_frames, (config.image_size,) * 2)[None])["probabilities"])[0]
    top = np.argsort(-probs)[:3]  # the three likeliest classes, likeliest first, with their probabilities
    assert [c for c, _ in results[video]] == [classes[i] for i in top]
    np.testing.assert_allclose([p for _, p in results[video]], probs[top], atol=1e-5)
    assert "bad.mp4" in results[str(bad)]
    assert main(["predict", "--model", tiny_run, video, str(bad)]) == 1
    out, err = capsys.readouterr()
    assert video in out and "bad.mp4: error" in err


def test_corrupt_files_skipped_and_counted_in_run(tiny_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    os.remove(data / "manifest.csv")
    (data / "left" / "corrupt.mp4").write_bytes(os.urandom(3000))
    (data / "up" / "empty.avi").write_bytes(b"")
    run = train("sora_cls", str(data), str(tmp_path / "run"), epochs=1, preset="tiny", verbose=0)
    report = json.load(open(os.path.join(run, "data_report.json")))
    assert report["skipped"] == 2
    assert {os.path.basename(s["path"]) for s in report["skipped_files"]} == {"corrupt.mp4", "empty.avi"}
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "strict"), "--preset", "tiny",
                 "--epochs", "1", "--strict"]) == 2


def test_cli_errors_and_help(tmp_path, capsys):
    runs = str(tmp_path / "runs" / "typo")
    assert main(["train", "--data", str(tmp_path / "missing"), "--preset", "tiny", "--out", runs]) == 2
    assert "missing" in capsys.readouterr().err
    assert not os.path.exists(runs)  # no empty run folder left behind
    assert main(["train", "--model", "nope", "--preset", "tiny"]) == 2
    for command in ("train", "evaluate", "predict", "make-data"):
        done = subprocess.run([sys.executable, "-m", "sora_tf", command, "--help"],
                              capture_output=True, text=True)
        assert done.returncode == 0 and "usage" in done.stdout


def test_evaluate_on_other_data(tiny_run, tiny_data, tmp_path):
    assert evaluate(tiny_run, data=tiny_data)["num_clips"] == 42
    other = tmp_path / "other"
    shutil.copytree(os.path.join(tiny_data, "left"), other / "left")
    shutil.copytree(os.path.join(tiny_data, "up"), other / "up")
    with pytest.raises(ValueError, match="differ from the run's"):
        evaluate(tiny_run, data=str(other))


def test_relative_data_path_then_evaluate(tiny_data, tmp_path, monkeypatch):
    monkeypatch.chdir(os.path.dirname(tiny_data))
    run = train("sora_cls", os.path.basename(tiny_data), str(tmp_path / "rel"), epochs=1, preset="tiny", verbose=0)
    assert evaluate(run)["num_clips"] == 7
