"""The commands on an embedding folder: `search`, `duplicates`, `map` and kNN anomaly scores."""
import csv
import io
import logging
import os

import numpy as np

from sora_tf.atomic import atomic_write, save_text
from sora_tf.embedding import index as vector_index
from sora_tf.embedding.embedders import load_embedder
from sora_tf.embedding.store import Embeddings, embed_listing, load

log = logging.getLogger("sora_tf.embedding")

# Cosine similarity from which `duplicates` calls two clips near-duplicates when the folder has
# no threshold of its own (`store.calibrate` sets one from copies of the collection's clips).
DUPLICATE_THRESHOLD = 0.95
# Past this share of a collection's pairs above its calibrated threshold, `duplicates` says the
# embedding does not tell copies from other clips (a classifier's, which maps a class to a point).
FALSE_DUPLICATES_WARNING = 0.05
ANOMALY_NEIGHBOURS = 5


def embed_videos(embeddings, videos):
    """[(video, unit vector or the error string)]: each video embedded as the folder's clips were."""
    from sora_tf.data.sources import Listing
    from sora_tf.data.video import VideoError, probe

    embedder = load_embedder(embeddings.meta["model"])
    embedder._sampling(embeddings.meta["sampling"])
    results, good = {}, []
    for video in videos:
        try:
            good.append((video, *probe(video)))
        except (VideoError, OSError) as e:
            results[video] = str(e)
    if good:
        listing = Listing([v for v, _, _ in good], [0] * len(good), [n for _, n, _ in good], ["?"], [],
                          fps=[r for _, _, r in good])
        from sora_tf.data.pipeline import DecodeFailures
        failures = DecodeFailures()
        vectors, paths = embed_listing([embedder], listing, failures)
        results.update(zip(paths, vectors[embedder.name] if paths else []))
        results.update({p: f"{p}: {r}" for p, r in failures.paths})
    return [(v, results[v]) for v in videos]


def _index(folder, embeddings):
    path = os.path.join(folder, "index.faiss")
    return vector_index.read(path) if os.path.isfile(path) else vector_index.build(embeddings.vectors)


def search(folder, videos=(), clip=None, k=5):
    """[(query, [{"path", "label", "similarity"}] or an error string)] of the `k` nearest clips in
    the embedding folder to each video file, or to `clip`, a clip of the folder (itself left out)."""
    if k < 1:
        raise ValueError(f"--k must be >= 1, got {k}")
    embeddings = load(folder)
    index = _index(folder, embeddings)
    if clip is not None:
        real = [os.path.realpath(p) for p in embeddings.paths]
        if os.path.realpath(clip) not in real:
            raise ValueError(f"--clip {clip}: not a clip of {folder} (give it as a video to embed it)")
        at = real.index(os.path.realpath(clip))
        queries, exclude = [(clip, embeddings.vectors[at])], [at]
    else:
        queries, exclude = embed_videos(embeddings, videos), None
    vectors = [v for _, v in queries if not isinstance(v, str)]
    sims, ids = vector_index.neighbours(index, np.stack(vectors), k, exclude) if vectors else ([], [])
    results, j = [], 0
    for query, vector in queries:
        if isinstance(vector, str):
            results.append((query, vector))
            continue
        results.append((query, [{"path": embeddings.rows[i]["path"], "label": embeddings.rows[i]["label"],
                                 "similarity": float(s)} for s, i in zip(sims[j], ids[j]) if i >= 0]))
        j += 1
    return results


def duplicates(folder, out, threshold=None, neighbours=50):
    """(pairs, threshold): the pairs of clips whose cosine similarity is at least `threshold`
    (default: the folder's calibrated one, else DUPLICATE_THRESHOLD; each clip's `neighbours`
    nearest considered), most similar first, also written to the CSV `out`: path_a, path_b,
    similarity, label_a, label_b, same_group (when the folder has groups)."""
    embeddings = load(folder)
    if threshold is None:
        threshold = embeddings.meta.get("duplicate_threshold", DUPLICATE_THRESHOLD)
        share = embeddings.meta.get("calibration", {}).get("other_pairs_at_or_above", 0.0)
        if share > FALSE_DUPLICATES_WARNING:
            log.warning("%s: at its calibrated threshold %.3f, %.0f%% of all pairs of clips count as duplicates: "
                        "this embedding does not tell copies from other clips of a kind; embed with "
                        "`--model pixels` to find near-duplicates", folder, threshold, 100 * share)
    if not -1.0 <= threshold <= 1.0:
        raise ValueError(f"--threshold is a cosine similarity in [-1, 1], got {threshold}")
    sims, ids = vector_index.neighbours(_index(folder, embeddings), embeddings.vectors, neighbours,
                                        exclude=np.arange(len(embeddings.rows)))
    pairs = {}
    for a in range(len(ids)):
        for s, b in zip(sims[a], ids[a]):
            if b >= 0 and s >= threshold:
                pairs[(min(a, b), max(a, b))] = float(s)
    rows = embeddings.rows
    grouped = any(r["group"] for r in rows)
    ordered = sorted(pairs.items(), key=lambda x: -x[1])
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["path_a", "path_b", "similarity", "label_a", "label_b"] + (["same_group"] if grouped else []))
    for (a, b), s in ordered:
        writer.writerow([rows[a]["path"], rows[b]["path"], f"{s:.6f}", rows[a]["label"], rows[b]["label"]]
                        + ([int(rows[a]["group"] == rows[b]["group"])] if grouped else []))
    save_text(out, text.getvalue())
    return [(rows[a]["path"], rows[b]["path"], s) for (a, b), s in ordered], threshold


def knn_scores(normal, queries, k=ANOMALY_NEIGHBOURS, exclude=None):
    """Anomaly score per query: 1 - the mean cosine similarity of its `k` nearest `normal`
    vectors (a clip unlike every normal clip scores high); `exclude[q]`: the query's own row in
    `normal`, or -1."""
    index = vector_index.build(normal)
    sims, ids = vector_index.neighbours(index, queries, min(k, len(normal) - (exclude is not None)), exclude)
    return 1.0 - np.where(ids >= 0, sims, 0.0).sum(1) / np.maximum((ids >= 0).sum(1), 1)


def anomaly_scores(folder, videos, k=ANOMALY_NEIGHBOURS):
    """[(video, score or error)]: each video's distance to its `k` nearest clips in the folder,
    whose clips are taken as the normal ones."""
    embeddings = load(folder)
    queries = embed_videos(embeddings, videos)
    vectors = [v for _, v in queries if not isinstance(v, str)]
    scores = iter(knn_scores(embeddings.vectors, np.stack(vectors), k) if vectors else [])
    return [(q, v if isinstance(v, str) else float(next(scores))) for q, v in queries]


def draw_map(folder, out, outliers=0.05, seed=0, max_clips=20_000):
    """A 2-D t-SNE map of the folder's clips (scikit-learn, cosine; at most `max_clips`, spread
    evenly over the folder, as t-SNE's time grows with N log N), coloured by label, with the
    `outliers` fraction of clips furthest from their nearest neighbours marked and named.
    Returns {"clips", "outliers": [paths]}."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.manifold import TSNE

    if not out.endswith((".png", ".pdf", ".svg")):
        raise ValueError(f"--out {out}: write the map to a .png, .pdf or .svg file")
    if not 0 <= outliers < 1:
        raise ValueError(f"outliers is a fraction in [0, 1), got {outliers}")
    embeddings = load(folder)
    if len(embeddings.rows) > max_clips:
        keep = np.linspace(0, len(embeddings.rows) - 1, max_clips).round().astype(int)
        embeddings = Embeddings(embeddings.vectors[keep], [embeddings.rows[i] for i in keep], embeddings.meta)
    n = len(embeddings.rows)
    if n < 4:
        raise ValueError(f"{folder}: {n} clips; a map needs at least 4")
    xy = TSNE(2, perplexity=min(30.0, (n - 1) / 3), metric="cosine", init="pca",
              random_state=seed).fit_transform(embeddings.vectors)
    spread = knn_scores(embeddings.vectors, embeddings.vectors, ANOMALY_NEIGHBOURS, np.arange(n))
    marked = np.argsort(-spread)[:int(round(outliers * n))] if outliers else []
    labels = embeddings.column("label")
    fig, ax = plt.subplots(figsize=(8, 7))
    for name in sorted(set(labels)):
        at = [i for i, label in enumerate(labels) if label == name]
        ax.scatter(xy[at, 0], xy[at, 1], s=14, label=name, alpha=0.8)
    if len(marked):
        ax.scatter(xy[marked, 0], xy[marked, 1], s=80, facecolors="none", edgecolors="black",
                   label=f"outliers (top {outliers:.0%} kNN distance)")
        for i in marked:
            ax.annotate(os.path.basename(embeddings.rows[i]["path"]), xy[i], fontsize=6)
    ax.legend(fontsize=7, markerscale=1.5)
    ax.set_title(f"{n} clips, t-SNE of {os.path.basename(embeddings.meta['model'].rstrip('/'))} embeddings")
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    atomic_write(out, lambda tmp: fig.savefig(tmp, dpi=110, format=os.path.splitext(out)[1][1:]))
    plt.close(fig)
    return {"clips": n, "outliers": [embeddings.rows[i]["path"] for i in marked]}
