"""`cv`: grouped, stratified folds; one run per fold; resuming without redoing finished folds."""
import json
import os
import shutil

import numpy as np
import pytest

from sora_tf.cli import main
from sora_tf.data.sources import Listing
from sora_tf.data.video import VideoError, write_video
from sora_tf.train.cv import cross_validate, fold_parts, motion_baseline


def test_folds_keep_every_group_on_one_side_and_each_clip_in_one_test_fold():
    rng = np.random.default_rng(0)
    groups = [f"src{g}" for g in rng.integers(0, 12, 60)]
    labels = [int(g[3:]) % 2 for g in groups]  # a source's clips share its class, as in fight_surv
    listing = Listing([f"/v/{i}.mp4" for i in range(60)], labels, [30] * 60, ["a", "b"], [], groups)
    parts = fold_parts(listing, 4, 0.2, seed=0)
    tested = sorted(i for _, _, test in parts for i in test)
    assert tested == list(range(60))
    for train, val, test in parts:
        assert sorted(train + val + test) == list(range(60))
        sides = [{groups[i] for i in part} for part in (train, val, test)]
        assert not (sides[0] & sides[1] or sides[0] & sides[2] or sides[1] & sides[2])
        assert {labels[i] for i in test} == {0, 1} and {labels[i] for i in val} == {0, 1}
    assert fold_parts(listing, 4, 0.2, seed=0) == parts  # deterministic


def test_cv_runs_every_fold_then_resumes_without_redoing_finished_ones(tiny_data, tmp_path, capsys):
    out = str(tmp_path / "cv")
    args = ["cv", "--data", tiny_data, "--out", out, "--folds", "2", "--preset", "tiny", "--set", "epochs=1"]
    assert main(args) == 0
    assert "2-fold cross-validation" in capsys.readouterr().out
    with open(os.path.join(out, "cv.json")) as f:
        first = json.load(f)
    folds = first["per_fold"]
    assert [f["fold"] for f in folds] == [0, 1] and sum(f["test_clips"] for f in folds) == first["clips"]
    accuracies = [f["test_accuracy"] for f in folds]
    assert first["summary"]["test_accuracy"]["mean"] == pytest.approx(np.mean(accuracies))
    assert first["summary"]["test_accuracy"]["std"] == pytest.approx(np.std(accuracies, ddof=1))
    assert os.path.getsize(os.path.join(out, "cv.png")) > 0
    with open(os.path.join(out, "cv_predictions.csv")) as f:  # every clip, tested once
        assert len(f.readlines()) == 1 + first["clips"]
    assert first["sources"] is None  # ranking within sources: two-class data only
    # Every clip is tested once: the pooled confusion matrix counts each clip of each class once.
    pooled = np.asarray(first["test_confusion"]["rows_true_cols_pred"])
    assert pooled.sum() == first["clips"] and pooled.shape == (7, 7)
    for f in folds:  # balanced accuracy is the mean recall of the classes in that fold
        c = np.asarray(f["test_confusion"])
        present = c.sum(1) > 0
        assert f["test_balanced_accuracy"] == pytest.approx(np.mean(np.diag(c)[present] / c.sum(1)[present]))
    for k in (0, 1):  # each fold is an ordinary run whose held-out part is its fold
        with open(os.path.join(out, f"fold{k}", "split.json")) as f:
            assert len(json.load(f)["test"]) == folds[k]["test_clips"]

    kept = os.path.getmtime(os.path.join(out, "fold0", "best.keras"))
    shutil.rmtree(os.path.join(out, "fold1"))  # as if interrupted before fold 1 ran
    assert main(args) == 0
    assert os.path.getmtime(os.path.join(out, "fold0", "best.keras")) == kept  # not trained again
    with open(os.path.join(out, "cv.json")) as f:
        again = json.load(f)
    assert again["per_fold"][0] == folds[0]
    assert again["per_fold"][1]["test_clips"] == folds[1]["test_clips"]

    capsys.readouterr()  # the baseline is fitted on the finished folds, which are not trained again
    assert main([*args, "--baseline"]) == 0
    assert "baseline, logistic regression" in capsys.readouterr().out
    assert os.path.getmtime(os.path.join(out, "fold0", "best.keras")) == kept
    with open(os.path.join(out, "cv.json")) as f:
        baseline = json.load(f)["baseline"]
    assert [f["test_clips"] for f in baseline["per_fold"]] == [f["test_clips"] for f in folds]
    assert baseline["features"] == 28 and "sources" not in baseline  # seven classes: no ranking

    assert main([*args[:-1], "epochs=2"]) == 2  # another recipe in the same folder
    assert "another plan" in capsys.readouterr().err
    assert main([*args, "--fold-seed", "3"]) == 2  # other folds in the same folder
    assert "another plan" in capsys.readouterr().err


@pytest.mark.slow
def test_folds_of_the_motion_recipe_train_on_their_validation_clips(tiny_data, tmp_path, capsys):
    """Each fold run of the motion recipe trains on its validation clips too (train_on_val): its
    figures are its test fold's, and cv.json says so."""
    out = str(tmp_path / "cv")
    assert main(["cv", "--data", tiny_data, "--out", out, "--folds", "2", "--preset", "tiny",
                 "--set", "recipe=motion", "--set", "epochs=1", "--set", "eval_views=1", "--set", "eval_crops=1"]) == 0
    with open(os.path.join(out, "cv.json")) as f:
        result = json.load(f)
    assert "val_accuracy" not in result["summary"] and "test_accuracy" in result["summary"]
    for k, fold in enumerate(result["per_fold"]):
        with open(os.path.join(out, f"fold{k}", "split.json")) as f:
            split = json.load(f)
        assert fold["val_clips"] == 0 and fold["val_accuracy"] is None and not split["val"]
        assert fold["train_clips"] == len(split["train"]) and fold["train_clips"] + fold["test_clips"] == 42
    assert sum(f["test_clips"] for f in result["per_fold"]) == 42  # every clip tested once, as before
    capsys.readouterr()
    assert main(["retrieval", os.path.join(out, "fold0")]) == 0  # its queries: the test clips
    with open(os.path.join(out, "fold0", "retrieval.json")) as f:
        assert json.load(f)["queries"] == "the run's test clips"


def test_fold_seed_keeps_the_folds_while_the_seed_changes(tiny_data, tmp_path, monkeypatch):
    import sora_tf.train.run

    def stop(*args, **kwargs):  # each fold's manifest is written before its run trains
        raise KeyboardInterrupt

    monkeypatch.setattr(sora_tf.train.run, "train", stop)
    manifests = {}
    for name, seed, fold_seed in (("a", 0, None), ("b", 1, 0), ("c", 1, None)):
        with pytest.raises(KeyboardInterrupt):
            cross_validate("sora_cls", tiny_data, str(tmp_path / name), folds=2, preset="tiny",
                           sets=[f"seed={seed}"], fold_seed=fold_seed)
        with open(tmp_path / name / "fold0.csv") as f:
            manifests[name] = f.read()
    assert manifests["b"] == manifests["a"]  # seed 1 on seed 0's folds
    assert manifests["c"] != manifests["a"]  # by default the seed deals the folds


def test_cv_errors_name_the_problem(tiny_data, tmp_path):
    with pytest.raises(ValueError, match="--folds must be >= 2"):
        cross_validate("sora_cls", tiny_data, str(tmp_path / "a"), folds=1, preset="tiny")
    for model in ("sora_det", "sora_vaegan"):
        with pytest.raises(ValueError, match="labelled clips"):
            cross_validate(model, tiny_data, str(tmp_path / "b"), folds=2, preset="tiny")
    with pytest.raises(ValueError, match="--fold-seed .* must be >= 0"):
        cross_validate("sora_cls", tiny_data, str(tmp_path / "d"), folds=2, preset="tiny", fold_seed=-1)
    with pytest.raises(ValueError, match="cannot deal"):
        cross_validate("sora_cls", tiny_data, str(tmp_path / "c"), folds=50, preset="tiny")


def test_pooled_predictions_separate_ranking_within_and_across_sources(tmp_path):
    """Scores that order fight above noFight inside each source, but with source B's scores all
    above source A's: perfect within a source, not across them."""
    from sora_tf.train.classify import save_predictions
    from sora_tf.train.cv import pooled_predictions

    clips = {"a1": ("A", 0, 0.4), "a2": ("A", 1, 0.2), "b1": ("B", 0, 0.9), "b2": ("B", 1, 0.7), "c1": ("C", 0, 0.8)}
    listing = Listing(paths=list(clips), labels=[c[1] for c in clips.values()], counts=[8] * 5,
                      classes=["fight", "noFight"], skipped=[], groups=[c[0] for c in clips.values()])
    for k, names in enumerate((["a1", "a2", "c1"], ["b1", "b2"])):
        os.makedirs(tmp_path / f"fold{k}")
        save_predictions(str(tmp_path / f"fold{k}" / "predictions_test.csv"), names,
                         [clips[n][1] for n in names], [[clips[n][2], 1 - clips[n][2]] for n in names],
                         listing.classes)
    text, figures = pooled_predictions(str(tmp_path), 2, listing)
    assert text.count("\n") == 6 and ",B," in text
    assert figures["within_source_auroc"] == 1.0 and figures["within_source_pairs"] == 2
    assert figures["sources_with_both_classes"] == 2
    assert figures["auroc"] == pytest.approx(5 / 6)  # fights 0.4 0.9 0.8 against 0.2 0.7: 0.4 < 0.7
    os.remove(tmp_path / "fold1" / "predictions_test.csv")
    assert pooled_predictions(str(tmp_path), 2, listing) is None  # a fold from before: no figures


def _clip(path, rng, jerky):
    """A textured square crossing a noisy background: steadily, or reversing every frame."""
    background = rng.integers(0, 60, (120, 160, 3), dtype=np.uint8)
    square = rng.integers(120, 255, (30, 30, 3), dtype=np.uint8)
    frames, x = [], 20
    for t in range(20):
        x += (8 if t % 2 else -6) if jerky else 4
        f = background.copy()
        f[45:75, x:x + 30] = square
        frames.append(f)
    return write_video(str(path), np.stack(frames), fps=10)


def test_motion_statistics_tell_jerky_from_steady_motion(tmp_path):
    from sora_tf.data.motion import NAMES, clip_statistics, statistics

    rng = np.random.default_rng(0)
    steady = clip_statistics(_clip(tmp_path / "steady.mp4", rng, jerky=False))
    jerky = clip_statistics(_clip(tmp_path / "jerky.mp4", rng, jerky=True))
    assert steady.shape == jerky.shape == (len(NAMES),)
    named = lambda s: dict(zip(NAMES, s))
    assert named(jerky)["jerk"] > 1.5 * named(steady)["jerk"]  # 1.80 against 0.77 here
    assert 0 < named(steady)["moving_avg"] < 0.35  # the square (and its edge of flow), not the frame
    still = statistics(np.zeros((5, 12, 16, 2), np.float32))
    assert named(still)["moving_avg"] == 0 and named(still)["jerk"] == 0 and np.isfinite(still).all()
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(VideoError, match="empty.mp4"):
        clip_statistics(str(tmp_path / "empty.mp4"))


def test_motion_baseline_is_fitted_and_scored_on_the_folds(tmp_path):
    rng = np.random.default_rng(1)
    paths, labels, groups = [], [], []
    for g in range(6):  # six sources, each with a steady and a jerky clip or two
        for i in range(3):
            jerky = i % 2 == 0 if g % 2 else i % 2 == 1
            paths.append(_clip(tmp_path / f"s{g}_{i}.mp4", rng, jerky))
            labels.append(int(jerky))
            groups.append(f"s{g}")
    listing = Listing(paths, labels, [20] * len(paths), ["steady", "jerky"], [], groups)
    parts = fold_parts(listing, 3, 0.2, seed=0)
    result = motion_baseline(listing, parts)
    folds = result["per_fold"]
    assert sum(f["test_clips"] for f in folds) == len(paths) and not result["skipped"]
    assert result["summary"]["test_accuracy"]["mean"] == pytest.approx(np.mean([f["test_accuracy"] for f in folds]))
    assert result["summary"]["test_accuracy"]["mean"] >= 0.8  # jerk separates them, in unseen sources too
    assert result["sources"]["auroc"] >= 0.8 and result["sources"]["sources_with_both_classes"] == 6
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    listing.paths[0] = str(broken)  # a file that breaks after listing is left out and named
    result = motion_baseline(listing, parts)
    assert sum(f["test_clips"] for f in result["per_fold"]) == len(paths) - 1
    assert len(result["skipped"]) == 1 and "broken.mp4" in result["skipped"][0]
