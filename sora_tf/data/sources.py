"""Where clips come from: a class-per-folder directory (UCF101 style) or a CSV manifest.

Every file is probed by decoding it once. A file that is not a usable video (corrupt, empty,
not a video at all, a directory with a video's name) is skipped with a warning that names it,
and counted in the run summary; with `strict=True` it is an error instead.
"""
import csv
import dataclasses
import logging
import os
from concurrent.futures import ThreadPoolExecutor

from sora_tf.data.video import VideoError, count_frames

log = logging.getLogger("sora_tf.data")

IGNORED_NAMES = {"manifest.csv", "dataset.json", "videos.txt", "LICENSE", "README.md"}


@dataclasses.dataclass
class Listing:
    """Usable clips (`paths`, integer `labels`, decoded frame `counts`) and what was skipped."""

    paths: list
    labels: list
    counts: list
    classes: list
    skipped: list  # [(path, reason)]

    def summary(self):
        return {
            "clips": len(self.paths),
            "classes": self.classes,
            "per_class": {c: self.labels.count(i) for i, c in enumerate(self.classes)},
            "skipped": len(self.skipped),
            "skipped_files": [{"path": p, "reason": r} for p, r in self.skipped],
        }

    def subset(self, indices):
        return Listing(
            [self.paths[i] for i in indices], [self.labels[i] for i in indices],
            [self.counts[i] for i in indices], self.classes, [],
        )


def _from_folder(root):
    classes = sorted(
        d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)) and not d.startswith(".")
    )
    if not classes:
        raise ValueError(f"{root}: no class folders (expected {root}/<class>/<video files>)")
    items = []
    for label, name in enumerate(classes):
        folder = os.path.join(root, name)
        for entry in sorted(os.listdir(folder)):
            if entry.startswith(".") or entry in IGNORED_NAMES:
                continue
            items.append((os.path.join(folder, entry), label))
    return items, classes


def _from_csv(path):
    base = os.path.dirname(os.path.abspath(path))
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"path", "label"} <= set(rows[0]):
        raise ValueError(f"{path}: a manifest needs a header with 'path' and 'label' columns")
    classes = sorted({r["label"] for r in rows})
    index = {c: i for i, c in enumerate(classes)}
    items = [(os.path.join(base, r["path"]), index[r["label"]]) for r in rows]
    return items, classes


def _probe(path):
    try:
        return count_frames(path), None
    except VideoError as e:
        return 0, str(e).removeprefix(f"{path}: ")


def list_clips(source, strict=False, workers=None):
    """A Listing of every usable clip under `source` (a directory or a .csv manifest)."""
    source = os.fspath(source)
    if not os.path.exists(source):
        raise FileNotFoundError(f"{source}: data source does not exist")
    if os.path.isdir(source):
        manifest = os.path.join(source, "manifest.csv")
        items, classes = _from_csv(manifest) if os.path.isfile(manifest) else _from_folder(source)
    elif source.endswith(".csv"):
        items, classes = _from_csv(source)
    else:
        raise ValueError(f"{source}: data must be a class-per-folder directory or a .csv manifest")
    # OpenCV releases the GIL while decoding, so threads probe files in parallel.
    with ThreadPoolExecutor(workers or os.cpu_count()) as pool:
        probes = list(pool.map(_probe, [p for p, _ in items]))
    listing = Listing([], [], [], classes, [])
    for (path, label), (count, reason) in zip(items, probes):
        if reason is None:
            listing.paths.append(path)
            listing.labels.append(label)
            listing.counts.append(count)
            continue
        if strict:
            raise VideoError(f"{path}: {reason}")
        log.warning("skipping %s: %s", path, reason)
        listing.skipped.append((path, reason))
    if not listing.paths:
        raise ValueError(f"{source}: no usable video files ({len(listing.skipped)} skipped)")
    return listing
