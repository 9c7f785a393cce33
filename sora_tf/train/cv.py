"""`cv`: grouped k-fold cross-validation of a clip model's recipe.

scikit-learn's `StratifiedGroupKFold` deals the clips into folds with every group (source video)
in one fold and each fold's classes near the whole data's proportions. Fold k's clips are its
held-out test part; the other folds' clips are split again (grouped) into training and the
validation clips that pick the checkpoint, so no fold's figure has seen its test clips. Each fold
is an ordinary run under OUT/fold<k>, trained from a manifest (OUT/fold<k>.csv) that holds the
split, so `evaluate` and `export` work on it. cv.json holds every fold's test figures with their
mean and standard deviation; cv.png plots them. Run the command again to resume: finished folds
are read back, an interrupted one resumes from its last epoch. With `baseline`, a logistic
regression on 28 motion statistics of each clip (`sora_tf.data.motion`) is fitted and scored on
the same folds: what a model has to beat.
"""
import csv
import io
import logging
import os

import numpy as np

from sora_tf import models, train as tasks
from sora_tf.atomic import atomic_write, save_json, save_text
from sora_tf.config import override
from sora_tf.data.prepared import is_prepared
from sora_tf.data.sources import clip_group, list_clips
from sora_tf.data.split import grouped_split
from sora_tf.runs import default_run_dir, load_json
from sora_tf.train.metrics import balanced_accuracy, classification_metrics, recalls

log = logging.getLogger("sora_tf.train")

PLAN = "cv_plan.json"


def clip_groups(listing):
    """Each clip's group (source video): the listing's, or one of its own where it has none."""
    return listing.groups or [clip_group(p, None) for p in listing.paths]


def fold_parts(listing, folds, val_fraction, seed, name="data"):
    """[(train, val, test) clip indices] for each fold: test is the fold, val a grouped
    `val_fraction` of all clips drawn from the rest. Clips without a group are their own group."""
    from sklearn.model_selection import StratifiedGroupKFold

    groups = clip_groups(listing)
    labels = np.asarray(listing.labels)
    try:
        dealt = list(StratifiedGroupKFold(folds, shuffle=True, random_state=seed).split(labels, labels, groups))
    except ValueError as e:
        raise ValueError(f"{name}: cannot deal {len(set(groups))} groups into {folds} folds ({e})") from None
    inner = min(0.5, val_fraction * folds / (folds - 1))  # val_fraction of all clips, as a run has
    parts = []
    for rest, test in dealt:
        try:
            tr, va = grouped_split(labels[rest], [groups[i] for i in rest], inner, seed)
        except ValueError as e:
            raise ValueError(f"cross-validation: a fold's training part cannot spare validation groups ({e})") from None
        parts.append((sorted(rest[tr].tolist()), sorted(rest[va].tolist()), sorted(test.tolist())))
    return parts


def _write_manifest(path, listing, part):
    rows = io.StringIO()
    writer = csv.writer(rows)
    writer.writerow(["path", "label", "group", "split"])
    for split, indices in zip(("train", "val", "test"), part):
        for i in indices:
            group = listing.groups[i] if listing.groups else ""
            writer.writerow([listing.paths[i], listing.classes[listing.labels[i]], group, split])
    save_text(path, rows.getvalue())


def _summary(values):
    values = np.asarray(values, float)
    return {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
            "min": float(values.min()), "max": float(values.max())}


def _tested(metrics):
    """A fold run's test figures: under `test`, or the whole of a run that trained on its validation clips."""
    return metrics if metrics["split"] == "test" else metrics["test"]


def _fold_result(fold, run, metrics, part):
    test = _tested(metrics)
    validated = metrics["split"] != "test"  # else its validation clips trained (train_on_val)
    return {"fold": fold, "run": run, "train_clips": len(part[0]) + (0 if validated else len(part[1])),
            "val_clips": len(part[1]) if validated else 0,
            "test_clips": test["num_clips"], "val_accuracy": metrics["accuracy"] if validated else None,
            "test_accuracy": test["accuracy"], "test_macro_f1": test["macro_f1"],
            # from the confusion matrix: folds evaluated by an older version have no balanced_accuracy
            "test_balanced_accuracy": balanced_accuracy(test["confusion_matrix"]["rows_true_cols_pred"]),
            "test_confusion": test["confusion_matrix"]["rows_true_cols_pred"],
            "test_multi_view_accuracy": test["multi_view"]["accuracy"]}


def plot_folds(result, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folds = result["per_fold"]
    x = np.arange(len(folds))
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for offset, key, label in ((-0.2, "test_accuracy", "test (single view)"),
                               (0.2, "test_multi_view_accuracy", "test (multi-view)")):
        ax.bar(x + offset, [f[key] for f in folds], 0.4, label=label)
        s = result["summary"][key]
        ax.axhline(s["mean"], ls="--", lw=1, color=ax.patches[-1].get_facecolor())
    ax.set_xticks(x, [f"fold {f['fold']}" for f in folds])
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    s = result["summary"]["test_accuracy"]
    ax.set_title(f"{result['model']}: {len(folds)}-fold test accuracy {s['mean']:.3f} +- {s['std']:.3f}")
    ax.legend(loc="lower right")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)


def cross_validate(model_name, data=None, out=None, folds=5, sets=(), preset=None, strict=False, fold_seed=None,
                   baseline=False):
    """Train one run per fold (resuming an interrupted cv in `out`); returns cv.json's content.

    The folds are dealt with `fold_seed` (default: the config's seed), so that `--set seed=K`
    with a fixed `fold_seed` retrains the same folds from other start weights: the seed-to-seed
    spread that a recipe's difference must beat."""
    from sora_tf.train.evaluate import evaluate
    from sora_tf.train.run import train

    module = models.get(model_name)
    task = tasks.task(model_name)
    if getattr(task, "cross_validation", False) is not True:
        raise ValueError(f"cv needs a model that learns from labelled clips; {model_name} is a {module.task} model")
    if folds < 2:
        raise ValueError(f"--folds must be >= 2, got {folds}")
    if preset not in (None, "tiny", "default"):
        raise ValueError(f"unknown preset {preset!r}: use 'tiny' or 'default'")
    config = override(module.Config.tiny() if preset == "tiny" else module.Config(), sets)
    config.validate()
    data = os.path.abspath(data or task.default_data(preset))
    if os.path.isdir(data) and is_prepared(data):
        raise ValueError(f"{data}: cv deals the clips of a folder or CSV manifest into folds; "
                         "give it the videos, not prepared data")
    out = out or default_run_dir(f"cv-{model_name}")
    plan = {"model": model_name, "data": data, "folds": folds, "sets": list(sets), "preset": preset,
            "seed": config.seed, "val_fraction": config.val_fraction}
    fold_seed = config.seed if fold_seed is None else fold_seed
    if fold_seed < 0:  # scikit-learn's folds take a seed in [0, 2**32)
        raise ValueError(f"--fold-seed (or the seed) must be >= 0, got {fold_seed}")
    if fold_seed != config.seed:  # recorded only then, as plans from before the option read
        plan["fold_seed"] = fold_seed
    plan_path = os.path.join(out, PLAN)
    if os.path.isfile(plan_path):
        saved = load_json(plan_path)
        if any(saved.get(k) != plan.get(k) for k in {*plan, "fold_seed"}):
            raise ValueError(f"{out} holds a cross-validation of another plan ({saved}); use a new --out")
        log.info("resuming the cross-validation in %s", out)
    listing = list_clips(data, strict=strict)
    parts = fold_parts(listing, folds, config.val_fraction, fold_seed, data)
    os.makedirs(out, exist_ok=True)
    save_json(plan_path, plan)
    results = []
    for k, part in enumerate(parts):
        run = os.path.join(out, f"fold{k}")
        metrics_path = os.path.join(run, "metrics.json")
        state = os.path.join(run, "state.json")
        trained = os.path.isfile(state) and load_json(state).get("finished")
        if trained and os.path.isfile(metrics_path):
            log.info("fold %d/%d: finished earlier, read from %s", k + 1, folds, run)
            metrics = load_json(metrics_path)
        elif trained:
            metrics = evaluate(run, strict=strict)
        else:
            manifest = os.path.join(out, f"fold{k}.csv")
            _write_manifest(manifest, listing, part)
            resume = os.path.isfile(os.path.join(run, "last.keras"))
            log.info("fold %d/%d: %d train, %d val, %d test clips%s", k + 1, folds, *map(len, part),
                     " (resuming)" if resume else "")
            train(model_name, manifest, run, sets=sets, preset=preset, resume=resume, strict=strict)
            metrics = evaluate(run, strict=strict)
        results.append(_fold_result(k, run, metrics, part))
        log.info("fold %d/%d: test accuracy %.4f (multi-view %.4f)", k + 1, folds,
                 results[-1]["test_accuracy"], results[-1]["test_multi_view_accuracy"])
    keys = ("test_accuracy", "test_balanced_accuracy", "test_multi_view_accuracy", "test_macro_f1") + (
        ("val_accuracy",) if all(f["val_accuracy"] is not None for f in results) else ())
    confusion = np.sum([f["test_confusion"] for f in results], axis=0)
    result = {**plan, "clips": len(listing.paths), "groups": len(set(listing.groups)) if listing.groups else None,
              "skipped": len(listing.skipped), "per_fold": results,
              "summary": {key: _summary([f[key] for f in results]) for key in keys},
              # Every clip is tested once, so the folds' confusion matrices add up to one of all clips.
              "test_confusion": {"labels": _tested(metrics)["confusion_matrix"]["labels"],
                                 "rows_true_cols_pred": confusion.tolist(),
                                 "recall": recalls(confusion).tolist()}}
    pooled = pooled_predictions(out, folds, listing)
    if pooled is not None:
        save_text(os.path.join(out, "cv_predictions.csv"), pooled[0])
        result["sources"] = pooled[1]
    if baseline:
        result["baseline"] = motion_baseline(listing, parts)
    save_json(os.path.join(out, "cv.json"), result)
    plot_folds(result, os.path.join(out, "cv.png"))
    return result


def motion_baseline(listing, parts):
    """Test figures of a logistic regression on each clip's motion statistics, fitted on each
    fold's training and validation clips (it has no checkpoint to pick) and scored on its test
    clips. A clip whose statistics cannot be computed is left out of every fold, counted and named."""
    from concurrent.futures import ThreadPoolExecutor

    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from sora_tf.data.motion import NAMES, clip_statistics
    from sora_tf.data.video import VideoError

    def one(path, count):  # OpenCV's decoding and flow release the GIL
        try:
            return clip_statistics(path, count)
        except VideoError as e:
            return str(e)

    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        stats = list(pool.map(one, listing.paths, listing.counts))
    skipped = [s for s in stats if isinstance(s, str)]
    for reason in skipped:
        log.warning("baseline: left out %s", reason)
    labels = np.asarray(listing.labels)
    groups = clip_groups(listing)
    per_fold, scores, truth, tested_groups = [], [], [], []
    for k, (train, val, test) in enumerate(parts):
        fit = [i for i in train + val if not isinstance(stats[i], str)]
        test = [i for i in test if not isinstance(stats[i], str)]
        model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=5000))
        model.fit(np.stack([stats[i] for i in fit]), labels[fit])
        p = np.zeros((len(test), len(listing.classes)))
        p[:, model.classes_] = model.predict_proba(np.stack([stats[i] for i in test]))
        metrics = classification_metrics(labels[test], p, listing.classes)
        per_fold.append({"fold": k, "test_clips": len(test), "test_accuracy": metrics["accuracy"],
                         "test_balanced_accuracy": metrics["balanced_accuracy"]})
        scores.append(p)
        truth += labels[test].tolist()
        tested_groups += [groups[i] for i in test]
    result = {"features": len(NAMES), "model": "logistic regression (C=1) on standardised motion statistics",
              "per_fold": per_fold,
              "summary": {key: _summary([f[key] for f in per_fold]) for key in ("test_accuracy", "test_balanced_accuracy")},
              "skipped": skipped}
    if len(listing.classes) == 2:
        truth = np.asarray(truth)
        result["sources"] = ranking(truth == 0, np.concatenate(scores)[:, 0], np.asarray(tested_groups),
                                    f"p_{listing.classes[0]}")
    return result


def ranking(y, score, groups, name):
    """ROC AUC of `score` for the positives `y`, over all clips and over the pairs of a positive
    and a negative clip of the same group (source)."""
    from sklearn.metrics import roc_auc_score

    right = pairs = 0.0
    for g in set(groups):
        pos, neg = score[(groups == g) & y], score[(groups == g) & ~y]
        right += (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
        pairs += pos.size * neg.size
    return {"score": name, "auroc": float(roc_auc_score(y, score)) if 0 < y.sum() < len(y) else None,
            "within_source_auroc": float(right / pairs) if pairs else None, "within_source_pairs": int(pairs),
            "sources_with_both_classes": int(sum(len(set(y[groups == g])) == 2 for g in set(groups)))}


def pooled_predictions(out, folds, listing):
    """(CSV text, figures) of every clip's test prediction over the folds, with its group; None
    when a fold run has no predictions_test.csv (one evaluated by an older version).

    For two classes, the figures separate how well the score ranks clips within one source from
    how well it ranks them across sources (ROC AUC over all clips, and over the pairs of a
    positive and a negative clip of the same source): a model that judges the scene rather than
    the event ranks well within a source and worse across them."""
    group_of = dict(zip(listing.paths, clip_groups(listing)))
    rows = []
    for k in range(folds):
        path = os.path.join(out, f"fold{k}", "predictions_test.csv")
        if not os.path.isfile(path):
            return None
        with open(path, newline="") as f:
            rows += [{"fold": k, "group": group_of.get(r["path"], ""), **r} for r in csv.DictReader(f)]
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]) if rows else ["fold"])
    writer.writeheader()
    writer.writerows(rows)
    classes = [c[2:] for c in rows[0] if c.startswith("p_")] if rows else []
    if len(classes) != 2:
        return text.getvalue(), None
    positive = classes[0]  # the first class's probability is the score
    y = np.array([r["label"] == positive for r in rows])
    score = np.array([float(r[f"p_{positive}"]) for r in rows])
    return text.getvalue(), ranking(y, score, np.array([r["group"] for r in rows]), f"p_{positive}")


def describe(result):
    s = result["summary"]
    return (f"{result['folds']}-fold cross-validation of {result['model']} on {result['data']} "
            f"({result['clips']} clips, {result['groups'] or result['clips']} groups)\n"
            f"test accuracy {s['test_accuracy']['mean']:.4f} +- {s['test_accuracy']['std']:.4f}  "
            f"multi-view {s['test_multi_view_accuracy']['mean']:.4f} +- {s['test_multi_view_accuracy']['std']:.4f}  "
            f"balanced {s['test_balanced_accuracy']['mean']:.4f}  macro-F1 {s['test_macro_f1']['mean']:.4f}\n"
            f"recall over all folds: " + ", ".join(
                f"{c} {r:.3f}" for c, r in zip(result["test_confusion"]["labels"], result["test_confusion"]["recall"])) + "\n"
            + "  ".join(f"fold {f['fold']} {f['test_accuracy']:.3f}" for f in result["per_fold"])
            + (f"\nROC AUC of {src['score']}: {src['auroc']:.3f} over all clips, {src['within_source_auroc']:.3f} within a "
               f"source ({src['within_source_pairs']} pairs in {src['sources_with_both_classes']} sources)"
               if (src := result.get("sources")) and src["within_source_pairs"] and src["auroc"] is not None else "")
            + (_describe_baseline(b) if (b := result.get("baseline")) else ""))


def _describe_baseline(b):
    s, src = b["summary"], b.get("sources")
    return (f"\nbaseline, {b['model']} ({b['features']} numbers a clip): test accuracy {s['test_accuracy']['mean']:.4f}"
            f" +- {s['test_accuracy']['std']:.4f}  balanced {s['test_balanced_accuracy']['mean']:.4f}"
            + (f"  ROC AUC {src['auroc']:.3f}, within a source {src['within_source_auroc']:.3f}"
               if src and src["auroc"] is not None and src["within_source_pairs"] else "")
            + (f"  ({len(b['skipped'])} clips left out)" if b["skipped"] else ""))
