"""Anomaly scores of a generative run (a model with `anomaly_score(frames)`), per video, and
their AUROC over held-out clips beside a no-model baseline (motion energy)."""
import os

import numpy as np

from sora_tf.atomic import save_json
from sora_tf.data.pipeline import per_video
from sora_tf.data.sources import list_clips
from sora_tf.runs import load_clips, load_run, run_listing


def anomaly_scores(run_dir, videos):
    """[(video, {"score", "reconstruction", "kl", "temporal"} or an error string)].

    The score has the form of the model's training loss, the negative ELBO up to constants:
    mean squared reconstruction error per pixel value + kl_weight x KL per pixel value. Clips
    unlike the training data reconstruct worse and sit further from the prior.
    """
    model, config, classes, _ = load_run(run_dir)
    if not hasattr(model, "anomaly_score"):
        raise ValueError(f"{run_dir}: a {type(model).__name__} run has no anomaly score")
    return per_video(videos, config.num_frames, (config.image_size,) * 2,
                     lambda clip: _scores(model, clip[None])[0], config.fps)


def _scores(model, clips):
    """Anomaly terms per clip of uint8 [N, T, S, S, 3], labels unknown."""
    out = []
    for i in range(0, len(clips), 16):
        terms = {k: np.asarray(v) for k, v in model.anomaly_score(clips[i:i + 16]).items()}
        out += [{k: float(v[j]) for k, v in terms.items()} for j in range(len(terms["score"]))]
    return out


def auroc(normal, anomalous):
    """Probability that an anomalous score exceeds a normal one (ties count half): ROC AUC."""
    from sklearn.metrics import roc_auc_score

    normal, anomalous = np.asarray(normal, np.float64), np.asarray(anomalous, np.float64)
    return float(roc_auc_score(np.r_[np.zeros(len(normal)), np.ones(len(anomalous))], np.r_[normal, anomalous]))


def motion_energy(clips):
    """Mean squared frame-to-frame change per clip of uint8 [N, T, H, W, 3], in [0, 1] pixel
    units: a score with no model at all, which a learned anomaly score has to beat (where the
    anomalous class simply moves more, it is hard to beat)."""
    x = np.asarray(clips, np.float32) / 255.0
    return np.square(np.diff(x, axis=1)).mean(axis=(1, 2, 3, 4))


def anomaly_auroc(run_dir, data, embedders=(), k=5):
    """AUROC of the anomaly score on every clip of `data` the run did not train on, nor any clip
    of the same source video (group): clips of the run's classes are normal, clips of other
    classes anomalous. Also the AUROC of each term alone, of `motion_energy`, the no-model
    baseline, and of the kNN distance to the run's training clips in the space of the run's own
    embedding, of `embedders` (named as `embed --model` takes them) and of the histogram and
    pixels baselines (`knn_aurocs`). Writes anomaly.json in the run."""
    model, config, classes, info = load_run(run_dir)
    listing = list_clips(data)
    train_part = run_listing(run_dir, classes, info, None, part="train")
    trained = set(train_part.paths)
    # Clips from a source video the run trained on (any class) are left out too: their scene
    # would make them look familiar whatever happens in them.
    trained_groups = set(train_part.groups or ())
    keep = [i for i, p in enumerate(listing.paths) if p not in trained
            and not (listing.groups and listing.groups[i] in trained_groups)]
    listing = listing.subset(keep)
    clips, labels = load_clips(listing, config)
    scores = _scores(model, clips)
    normal_ids = {i for i, c in enumerate(listing.classes) if c in classes}
    is_normal = np.array([l in normal_ids for l in labels])
    if is_normal.all() or not is_normal.any():
        raise ValueError(f"{data}: need held-out clips of the run's classes {classes} and of other classes")
    result = {"data": os.path.abspath(data), "normal_classes": classes,
              "num_normal": int(is_normal.sum()), "num_anomalous": int((~is_normal).sum())}
    for key in ("score", "reconstruction", "kl", "temporal"):
        values = np.array([s[key] for s in scores])
        result[f"auroc_{key}"] = auroc(values[is_normal], values[~is_normal])
    energy = motion_energy(clips)
    result["auroc_baseline_motion_energy"] = auroc(energy[is_normal], energy[~is_normal])
    result["knn"] = knn_aurocs(run_dir, train_part, listing, is_normal, embedders, k, model)
    save_json(os.path.join(run_dir, "anomaly.json"), result)
    return result


def knn_aurocs(run_dir, normal_part, held, is_normal, embedders=(), k=5, model=None):
    """{embedder: AUROC} of the kNN anomaly score (`sora_tf.embedding.uses.knn_scores`): each held-out
    clip's distance to its k nearest clips of `normal_part` (the run's training clips), in the
    space of the run's embedding (`model`, the run's own, if already loaded), of each of
    `embedders`, and of the two no-training baselines; one centred view per clip, as the run's
    own score sees it. The run and the baselines share one decoding; each other embedder
    samples its clips its own way."""
    from sora_tf.embedding.embedders import BASELINES, ModelEmbedder, load_embedder
    from sora_tf.embedding.store import embed_listing
    from sora_tf.embedding.uses import knn_scores

    own = load_embedder(run_dir) if model is None else ModelEmbedder(run_dir, model, model.config, run_dir)
    own.views = own.crops = 1
    result = {"k": k, "normal_collection": len(normal_part.paths)}
    groups = [[own, *(load_embedder(name, like=own) for name in BASELINES)],
              *([load_embedder(name)] for name in embedders)]
    for group in groups:
        group[0].views = group[0].crops = 1
        normal, _ = embed_listing(group, normal_part)
        queries, paths = embed_listing(group, held)
        flags = np.asarray([is_normal[held.paths.index(p)] for p in paths])
        for e in group:
            scores = knn_scores(normal[e.name], queries[e.name], k)
            name = "run" if e is own else e.name
            result[f"auroc_{name}"] = auroc(scores[flags], scores[~flags])
    return result
