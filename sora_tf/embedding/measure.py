"""How well a run's embedding retrieves, beside baselines that need no training, on clips the
run never trained on: `python -m sora_tf retrieval RUN` writes RUN/retrieval.json.

The run's held-out clips (`part`: its validation clips by default, its test clips where the
validation clips trained) are the queries; its training
clips are the collection they search. Every embedder sees the same decoded clips and views.
- class: precision@k (the share of the k nearest training clips of the query's class) and mean
  average precision over the whole ranking (`sklearn.metrics.average_precision_score`);
- copies (`store.copies`: a centre crop, re-encoded): recall@1 of each query's original among
  all clips, searched with its copy; the duplicate threshold calibrated as `embed` calibrates it
  (on copies of training clips) and the share of pairs of different queries at or above it;
- source (data with groups, e.g. fight_surv's `videos.txt`): recall@k of the query's other clips
  from the same source video, searched among all clips but itself, and the precision, recall and
  F1 of same-source pairs among the queries at the calibrated threshold and at the threshold
  with the best F1 on the training clips' pairs, with their average precision;
- anomaly (with `normal`): ROC AUC of the kNN distance to the training clips of the normal
  classes, every other class anomalous.
"""
import os

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve, precision_recall_fscore_support, \
    roc_auc_score

from sora_tf.atomic import save_json
from sora_tf.data.pipeline import DecodeFailures
from sora_tf.embedding import index as vector_index
from sora_tf.embedding.embedders import BASELINES, UNTRAINED, load_embedder
from sora_tf.embedding.store import copies, copy_threshold, distinct_pairs, embed_listing
from sora_tf.embedding.uses import knn_scores
from sora_tf.runs import held_out, load_json, source_listing, split_part


def class_retrieval(queries, query_labels, collection, collection_labels, k):
    """{precision_at_k, map}: same class counts as relevant."""
    sims = queries @ collection.T
    top = np.argsort(-sims, axis=1)[:, :k]
    relevant = np.asarray(collection_labels)[None] == np.asarray(query_labels)[:, None]
    ap = [average_precision_score(r, s) for r, s in zip(relevant, sims) if r.any()]
    return {f"precision_at_{k}": float(np.take_along_axis(relevant, top, 1).mean()),
            "map": float(np.mean(ap)) if ap else None}


def source_recall(vectors, groups, queries, k):
    """Mean recall@k of each query's other clips of its group among all `vectors` but itself,
    over the queries (row numbers) that have any."""
    index = vector_index.build(vectors, exact=True)
    _, ids = vector_index.neighbours(index, vectors[queries], k, exclude=np.asarray(queries))
    groups = np.asarray(groups)
    recalls = []
    for q, found in zip(queries, ids):
        same = (groups == groups[q]).sum() - 1
        if same:
            recalls.append((groups[found[found >= 0]] == groups[q]).sum() / same)
    return float(np.mean(recalls)) if recalls else None, len(recalls)


def _pairs(vectors, groups):
    sims, a, b = distinct_pairs(vectors)
    return sims, np.asarray(groups)[a] == np.asarray(groups)[b]


def duplicate_pairs(train_vectors, train_groups, vectors, groups, threshold):
    """Near-duplicate pairs (same source) among `vectors`: precision/recall/F1 at `threshold`
    and at the best-F1 threshold on the training pairs; average precision."""
    def scored(sims, truth, threshold):
        p, r, f, _ = precision_recall_fscore_support(truth, sims >= threshold, average="binary", zero_division=0)
        return {"threshold": float(threshold), "precision": float(p), "recall": float(r), "f1": float(f)}

    sims, truth = _pairs(vectors, groups)
    result = {"pairs": int(len(sims)), "same_source_pairs": int(truth.sum()),
              "average_precision": float(average_precision_score(truth, sims)) if truth.any() else None,
              "at_calibrated_threshold": scored(sims, truth, threshold)}
    t_sims, t_truth = _pairs(train_vectors, train_groups)
    if t_truth.any():
        p, r, thresholds = precision_recall_curve(t_truth, t_sims)
        f1 = 2 * p * r / np.maximum(p + r, 1e-12)
        result["at_train_best_f1_threshold"] = scored(sims, truth, thresholds[int(np.argmax(f1[:-1]))])
    return result


def copy_figures(vectors, originals, copied, queries, threshold):
    """Each copy searched among all `vectors`: how often its original comes first; the
    calibrated `threshold`; how many copies reach it; and the share of pairs of different
    queries at or above it (false duplicates)."""
    nearest = np.argmax(copied @ vectors.T, axis=1)
    sims = np.einsum("ij,ij->i", copied, vectors[originals])
    others, _, _ = distinct_pairs(vectors[queries])
    return {"recall_at_1": float((nearest == np.asarray(originals)).mean()), "copies": len(originals),
            "similarity_median": float(np.median(sims)), "calibrated_threshold": threshold,
            "copies_at_or_above": float((sims >= threshold).mean()),
            "other_pairs_at_or_above": float((others >= threshold).mean())}


def measure(run_dir, part=None, k=5, normal=None, baselines=("untrained",) + BASELINES, strict=False,
            extra=(), out="retrieval.json"):
    """RUN/`out` (see the module's docstring); returns it. `extra`: more embedders (objects) to
    measure beside the others, for probes."""
    info = load_json(os.path.join(run_dir, "run.json"), needs=("model", "data"))
    classes = load_json(os.path.join(run_dir, "classes.json"))
    if normal is not None and (not normal or set(normal) - set(classes)):
        raise ValueError(f"--normal {normal}: give classes of the run, among {classes}")
    trained = load_embedder(run_dir)
    embedders = [trained] + [load_embedder(UNTRAINED + run_dir if b == "untrained" else b, like=trained)
                             for b in baselines] + list(extra)
    listing = source_listing(classes, info, strict=strict)
    train = split_part(run_dir, listing, "train", info["data"])
    part, held = (held_out(run_dir, listing, info["data"]) if part is None
                  else (part, split_part(run_dir, listing, part, info["data"])))
    if held is None:
        raise ValueError(f"{run_dir}: the run holds out no {part or 'validation or test'} clips")
    position = {p: i for i, p in enumerate(listing.paths)}
    both = listing.subset([position[p] for p in train.paths + held.paths])
    failures = DecodeFailures()
    vectors, paths = embed_listing(embedders, both, failures)
    at = {p: i for i, p in enumerate(both.paths)}
    rows = [at[p] for p in paths]
    where = {p: i for i, p in enumerate(paths)}
    copied, copied_paths = embed_listing(embedders, held.subset([i for i, p in enumerate(held.paths) if p in where]),
                                         transform=copies)
    calibration, calibration_paths = embed_listing(
        embedders, train.subset([i for i, p in enumerate(train.paths) if p in where]).spread(32), transform=copies)
    labels = np.asarray(both.labels)[rows]
    groups = np.asarray(both.groups)[rows] if both.groups else None
    is_query = np.asarray([i >= len(train.paths) for i in rows])
    queries, collection = np.flatnonzero(is_query), np.flatnonzero(~is_query)
    result = {"run": os.path.abspath(run_dir), "data": info["data"], "queries": f"the run's {part} clips",
              "num_queries": int(len(queries)), "num_collection": int(len(collection)), "k": k,
              "sampling": trained.sampling(), "skipped": len(listing.skipped) + len(failures.paths),
              "embedders": {}}
    for e in embedders:
        v = vectors[e.name]
        figures = {"dim": int(v.shape[1]),
                   "class": class_retrieval(v[queries], labels[queries], v[collection], labels[collection], k)}
        threshold = copy_threshold(np.einsum("ij,ij->i", calibration[e.name],
                                             v[[where[p] for p in calibration_paths]]))
        figures["copies"] = copy_figures(v, [where[p] for p in copied_paths], copied[e.name], queries, threshold)
        if groups is not None:
            recall, n = source_recall(v, groups, queries, k)
            figures["source"] = {f"recall_at_{k}": recall, "queries_with_same_source_clips": n,
                                 "duplicates": duplicate_pairs(v[collection], groups[collection],
                                                               v[queries], groups[queries], threshold)}
        if normal:
            ids = [classes.index(c) for c in normal]
            normal_rows = collection[np.isin(labels[collection], ids)]
            scores = knn_scores(v[normal_rows], v[queries])
            anomalous = ~np.isin(labels[queries], ids)
            figures["anomaly"] = {"normal": list(normal), "auroc": float(roc_auc_score(anomalous, scores))
                                  if anomalous.any() and not anomalous.all() else None,
                                  "normal_collection": int(len(normal_rows))}
        name = ("sora (trained run)" if e is trained else
                "untrained" if e.name.startswith(UNTRAINED) else e.name)
        result["embedders"][name] = figures
    save_json(os.path.join(run_dir, out), result)
    return result


def describe(result):
    """A table of the headline figures, one row per embedder."""
    k = result["k"]
    w = max(map(len, result["embedders"]))
    lines = [f"{result['num_queries']} queries ({result['queries']}) against {result['num_collection']} "
             f"training clips", f"{'embedder':<{w}} {'P@' + str(k):>6} {'mAP':>6} {'srcR@' + str(k):>7} "
             f"{'dupAP':>6} {'dupF1':>6} {'copyR@1':>7} {'falseDup':>8} {'anomAUC':>7}"]

    def cell(x, width):
        return f"{x:>{width}.3f}" if isinstance(x, float) else f"{'-':>{width}}"
    for name, f in result["embedders"].items():
        source = f.get("source", {})
        dup = source.get("duplicates", {})
        best = dup.get("at_train_best_f1_threshold", {})
        lines.append(f"{name:<{w}} {cell(f['class'][f'precision_at_{k}'], 6)} {cell(f['class']['map'], 6)} "
                     f"{cell(source.get(f'recall_at_{k}'), 7)} {cell(dup.get('average_precision'), 6)} "
                     f"{cell(best.get('f1'), 6)} {cell(f['copies']['recall_at_1'], 7)} "
                     f"{cell(f['copies']['other_pairs_at_or_above'], 8)} {cell(f.get('anomaly', {}).get('auroc'), 7)}")
    return "\n".join(lines)
