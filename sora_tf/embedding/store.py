"""An embedding folder: the vectors of a collection of clips and what each clip is.

`EMB_DIR/vectors.npy` float32 [N, D], each row L2-normalised (the inner product of two rows is
their cosine similarity); `clips.csv` one row per vector: path, label, group, split (where the
embedder's run put the clip: train, val or test; or the manifest's split column; empty when
unknown), and the file's size and modification time; `embedding.json` the embedder, its
sampling, the counts and the skipped files; `index.faiss` the search index (`index.py`). The
folder is published whole (`sora_tf.atomic.atomic_dir`); embedding into it again adds the clips
that are new or changed since and drops those no longer listed, without embedding the others.
"""
import csv
import dataclasses
import io
import logging
import os

import numpy as np

from sora_tf.atomic import atomic_dir, check_replaceable, save_json, save_text
from sora_tf.embedding import index as vector_index
from sora_tf.embedding.embedders import load_embedder
from sora_tf.progress import bar

log = logging.getLogger("sora_tf.embedding")

MARKER = "embedding.json"
COLUMNS = ("path", "label", "group", "split", "size", "mtime_ns")


@dataclasses.dataclass
class Embeddings:
    vectors: np.ndarray  # [N, D] float32, rows of unit length
    rows: list  # [{column: value}] per vector, COLUMNS
    meta: dict

    @property
    def paths(self):
        return [r["path"] for r in self.rows]

    def column(self, key):
        return [r[key] for r in self.rows]


def normalised(vectors):
    vectors = np.asarray(vectors, np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def embed_listing(embedders, listing, failures=None, batch_size=8, transform=None):
    """({embedder name: unit vectors [N, D]}, paths embedded) of `listing`'s clips, decoded once for
    every embedder (they share the first one's sampling): each clip's `views` temporal windows x
    `crops` spatial crops are embedded and their mean normalised, as evaluation averages views.
    Clips that fail to decode are left out (and counted in `failures`). `transform`: a function
    of uint8 clips [N, T, S, S, 3] applied to every view first (`copies`)."""
    import tensorflow as tf

    from sora_tf.data.pipeline import dataset_for
    from sora_tf.data.sampling import crop_views

    first = embedders[0]
    ds = dataset_for(listing, clip_len=first.num_frames, size=(first.image_size,) * 2, training=False,
                     batch_size=batch_size, strides=listing.strides(first.fps), views=first.views,
                     failures=failures)
    out, paths = {e.name: [] for e in embedders}, []
    for batch in bar(ds, "embedding", total=-(-len(listing.paths) // batch_size), unit="batch"):
        frames = crop_views(batch["frames"], first.crops)  # [B, V, T, S, S, 3]
        b, v = frames.shape[:2]
        clips = tf.cast(tf.clip_by_value(tf.round(tf.cast(frames, tf.float32)), 0, 255), tf.uint8).numpy()
        clips = clips.reshape(b * v, *clips.shape[2:])
        if transform is not None:
            clips = transform(clips)
        for e in embedders:
            out[e.name].append(e.embed(clips).reshape(b, v, -1).mean(1))
        paths += [p.decode() for p in batch["path"].numpy()]
    return {k: normalised(np.concatenate(v)) if v else None for k, v in out.items()}, paths


def copies(clips, crop=0.85, quality=40):
    """Near-duplicates of uint8 clips [N, T, S, S, 3] as a re-upload makes them: the centre `crop`
    of every frame scaled back up, then re-encoded as JPEG at `quality`."""
    import cv2

    n, t, s = clips.shape[:3]
    side = int(round(s * crop))
    lo = (s - side) // 2
    out = np.empty_like(clips)
    for i in range(n):
        for j in range(t):
            frame = cv2.resize(clips[i, j, lo:lo + side, lo:lo + side], (s, s), interpolation=cv2.INTER_LINEAR)
            ok, data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
            out[i, j] = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    return out


COPY_RECALL = 0.95  # the duplicate threshold keeps this share of a collection's copies (`calibrate`)


def distinct_pairs(vectors):
    """(cosine similarities, i, j) of every pair of rows i < j of unit `vectors`."""
    a, b = np.triu_indices(len(vectors), 1)
    return (vectors @ vectors.T)[a, b], a, b


def copy_threshold(similarities):
    """The similarity that COPY_RECALL of copies reach with their originals."""
    return float(np.quantile(similarities, 1 - COPY_RECALL))


def calibrate(embedder, listing, vectors, paths, sample=32):
    """{"duplicate_threshold", ...}: the cosine similarity that COPY_RECALL of the copies
    (`copies`) of up to `sample` of the clips reach with their original, in this embedder's
    space, and the share of pairs of different clips of the collection at or above it. Each
    embedder has its own scale; the collection's own clips set it, no labels needed."""
    if len(paths) < 8:
        return {}
    at = {p: i for i, p in enumerate(listing.paths)}
    copied, copied_paths = embed_listing([embedder], listing.subset([at[p] for p in paths]).spread(sample),
                                         transform=copies)
    row = {p: i for i, p in enumerate(paths)}
    sims = np.einsum("ij,ij->i", copied[embedder.name], vectors[[row[p] for p in copied_paths]])
    threshold = copy_threshold(sims)
    others, _, _ = distinct_pairs(vectors[np.linspace(0, len(vectors) - 1, min(len(vectors), 2000)).round().astype(int)])
    return {"duplicate_threshold": threshold, "calibration": {
        "copies": len(sims), "copy": "centre 85% crop, JPEG quality 40", "copy_similarity_median": float(np.median(sims)),
        "copy_recall": COPY_RECALL, "other_pairs_at_or_above": float((others >= threshold).mean())}}


def _stamp(path):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return str(st.st_size), str(st.st_mtime_ns)


def run_splits(embedder, data):
    """({real path: "val" | "test"}, the part of every other clip): where the embedder's run put
    each clip, when `data` is the run's own data (the rest it trained on); else ({}, "")."""
    if embedder.run_dir is None:
        return {}, ""
    from sora_tf.runs import load_json
    run = embedder.run_dir
    info = load_json(os.path.join(run, "run.json"), needs=("data",))
    if os.path.realpath(info["data"]) != os.path.realpath(data):
        return {}, ""
    split = load_json(os.path.join(run, "split.json"), needs=("val_paths",))
    parts = {os.path.realpath(p): "val" for p in split["val_paths"]}
    parts.update({os.path.realpath(p): "test" for p in split.get("test_paths") or ()})
    return parts, "train"


def load(folder):
    """The Embeddings in `folder`, with an error naming it when it is not an embedding folder."""
    from sora_tf.runs import load_json

    meta_path = os.path.join(folder, MARKER)
    if not os.path.isfile(meta_path):
        raise FileNotFoundError(f"{folder}: not an embedding folder (no {MARKER}; write one with `embed`)")
    meta = load_json(meta_path, needs=("model", "dim", "sampling"))
    vectors = np.load(os.path.join(folder, "vectors.npy"))
    with open(os.path.join(folder, "clips.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    if len(rows) != len(vectors):
        raise ValueError(f"{folder}: {len(rows)} rows in clips.csv but {len(vectors)} vectors")
    return Embeddings(vectors, rows, meta)


def embed(model, data, out, strict=False, views=None, crops=None):
    """Embed every clip of `data` with the embedder `model` names into the embedding folder `out`
    (new, or written before by the same embedder: then only new and changed clips are embedded).
    Returns the folder's `embedding.json` as a dict."""
    from sora_tf.data.pipeline import DecodeFailures
    from sora_tf.data.sources import list_clips

    check_replaceable(out, MARKER, "an embedding folder")
    embedder = load_embedder(model)
    for key, value in (("views", views), ("crops", crops)):
        if value is not None:
            if value < 1 or (key == "crops" and value not in (1, 3)):
                raise ValueError(f"--{key} must be {'1 or 3' if key == 'crops' else '>= 1'}, got {value}")
            setattr(embedder, key, value)
    old = load(out) if os.path.isfile(os.path.join(out, MARKER)) else None
    if old is not None and (old.meta["model"] != embedder.name or old.meta["sampling"] != embedder.sampling()):
        raise ValueError(f"{out}: embedded by {old.meta['model']} with {old.meta['sampling']}, not by "
                         f"{embedder.name} with {embedder.sampling()}: give a new --out")
    unchanged = {}
    if old is not None:
        unchanged = {r["path"]: (i, r) for i, r in enumerate(old.rows)
                     if _stamp(r["path"]) == (r["size"], r["mtime_ns"])}
    listing = list_clips(data, strict=strict, known=unchanged)
    fresh = [i for i, p in enumerate(listing.paths) if p not in unchanged]
    failures = DecodeFailures()
    vectors, paths = ({}, [])
    if fresh:
        vectors, paths = embed_listing([embedder], listing.subset(fresh), failures)
    splits, other = run_splits(embedder, data)
    at = {p: i for i, p in enumerate(listing.paths)}
    rows, parts = [], []
    kept = list(dict.fromkeys(p for p in listing.known + listing.paths if p in unchanged))
    if kept:
        parts.append(old.vectors[[unchanged[p][0] for p in kept]])
        rows += [unchanged[p][1] for p in kept]
    if paths:
        parts.append(vectors[embedder.name])
        for path in paths:
            i = at[path]
            split = (listing.splits[i] if listing.splits else
                     splits.get(os.path.realpath(path), other))
            rows.append(dict(zip(COLUMNS, (path, listing.classes[listing.labels[i]],
                                           listing.groups[i] if listing.groups else "", split,
                                           *(_stamp(path) or ("", ""))))))
    if not rows:
        raise ValueError(f"{data}: no clip could be embedded ({len(listing.skipped) + len(failures.paths)} skipped)")
    all_vectors = np.concatenate(parts).astype(np.float32)
    calibrated = calibrate(embedder, listing, vectors[embedder.name], paths) if paths else {}
    if not calibrated and old is not None:
        calibrated = {k: old.meta[k] for k in ("duplicate_threshold", "calibration") if k in old.meta}
    skipped = [{"path": p, "reason": r} for p, r in listing.skipped + failures.paths]
    meta = {"model": embedder.name, "embedder": type(embedder).__name__, "dim": int(all_vectors.shape[1]),
            "sampling": embedder.sampling(), "data": os.path.abspath(data), "clips": len(rows),
            "embedded_now": len(paths), "reused": len(kept),
            "dropped": (len(old.rows) - len(kept)) if old is not None else 0,
            "skipped": len(skipped), "skipped_files": skipped,
            "index": vector_index.kind(len(rows)), "similarity": "cosine (inner product of unit vectors)",
            **calibrated}
    with atomic_dir(out) as tmp:
        np.save(os.path.join(tmp, "vectors.npy"), all_vectors)
        text = io.StringIO()
        writer = csv.DictWriter(text, COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
        save_text(os.path.join(tmp, "clips.csv"), text.getvalue())
        vector_index.save(vector_index.build(all_vectors), os.path.join(tmp, "index.faiss"))
        save_json(os.path.join(tmp, MARKER), meta)
    for s in skipped:
        log.warning("skipped %s: %s", s["path"], s["reason"])
    return meta

