"""Where clips come from: a class-per-folder directory (UCF101 style) or a CSV manifest.

Clips may belong to groups (the source video they were cut from): a `group` column in the CSV
manifest, or a `videos.txt` beside the class folders in the form the Surveillance Camera Fight
dataset uses (a source URL line, then one `clip_name: start - end` line per clip cut from it).
Grouped splits keep every group on one side.

Every file is probed by decoding it once. A file that is not a usable video (corrupt, empty,
not a video at all, a directory with a video's name) is skipped with a warning that names it,
and counted in the run summary; with `strict=True` it is an error instead.
"""
import csv
import dataclasses
import logging
import os
import re

import numpy as np
from concurrent.futures import ThreadPoolExecutor

from sora_tf.data.prepared import is_prepared, load_manifest
from sora_tf.data.video import VideoError, probe
from sora_tf.progress import bar

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
    groups: list = None  # a group name per clip, or None when the source has no groups
    fps: list = None  # container frame rate per clip, 0.0 when unknown
    prepared: str = None  # the prepared folder these clips are read from, if any
    records: list = None  # their record indices there
    splits: list = None  # "train", "val" or "test" per clip, from a manifest's `split` column
    hidden: list = dataclasses.field(default_factory=list)  # hidden files passed over (".name")
    known: list = dataclasses.field(default_factory=list)  # listed, but left out as `known` (not probed)

    def strides(self, fps):
        """Per-clip eval spacing in frames for sampling at `fps` (0: over the whole video)."""
        rates = self.fps or [0.0] * len(self.paths)
        return [r / fps if fps > 0 and r > 0 else 0.0 for r in rates]

    def summary(self):
        return {
            "clips": len(self.paths),
            "classes": self.classes,
            "per_class": {c: self.labels.count(i) for i, c in enumerate(self.classes)},
            "skipped": len(self.skipped),
            "skipped_files": [{"path": p, "reason": r} for p, r in self.skipped],
            "hidden_files_passed_over": len(self.hidden),
            "hidden_files": self.hidden[:100],
            "groups": len(set(self.groups)) if self.groups else None,
        }

    def subset(self, indices):
        return Listing(
            [self.paths[i] for i in indices], [self.labels[i] for i in indices],
            [self.counts[i] for i in indices], self.classes, [],
            [self.groups[i] for i in indices] if self.groups else None,
            [self.fps[i] for i in indices] if self.fps else None,
            self.prepared, [self.records[i] for i in indices] if self.records else None,
            [self.splits[i] for i in indices] if self.splits else None,
        )

    def spread(self, limit):
        """Up to `limit` of the clips, spread evenly over the listing (all when it has no more)."""
        n = len(self.paths)
        return self.subset(np.linspace(0, n - 1, min(limit, n)).round().astype(int).tolist())


def _from_folder(root):
    classes = sorted(
        d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)) and not d.startswith(".")
    )
    if not classes:
        raise ValueError(f"{root}: no class folders (expected {root}/<class>/<video files>)")
    items, hidden = [], []
    for label, name in enumerate(classes):
        folder = os.path.join(root, name)
        for entry in sorted(os.listdir(folder)):
            if entry.startswith("."):  # .DS_Store, editors' and sync tools' files
                hidden.append(os.path.join(folder, entry))
            elif entry not in IGNORED_NAMES:
                items.append((os.path.join(folder, entry), label, None))
    if hidden:
        log.info("%s: %d hidden file(s) passed over (e.g. %s)", root, len(hidden), hidden[0])
    return _with_source_groups(root, items), classes, hidden


def read_videos_txt(path):
    """{clip stem: source} from a `videos.txt`: a line with a URL starts a source, and each
    following `name: ...` line puts clip `name` in it; a `first - last : source` line puts a
    numbered range of clips in a named source. Sources that share a clip are merged."""
    parent = {}

    def root(x):
        while parent.setdefault(x, x) != x:
            x = parent[x]
        return x

    groups, source = {}, None
    with open(path) as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            head, _, tail = line.partition(":")
            if "://" in line.split()[0]:
                source, names = line, []
            elif tail and re.fullmatch(r"\s*\w+\s+-\s+\w+\s*", head):
                names, source = _clip_range(*(x.strip() for x in head.split("-"))), tail.strip()
            elif tail and source is not None:
                names = [head.strip()]
            else:
                raise ValueError(f"{path}:{number}: expected a source URL or 'clip: ...', got {line!r}")
            for name in names:
                if name in groups and root(groups[name]) != root(source):
                    parent[root(groups[name])] = root(source)
                groups[name] = source
    return {name: root(g) for name, g in groups.items()}


def _clip_range(first, last):
    """["nofi062", ..., "nofi076"] from "nofi062", "nofi076"."""
    a, b = re.fullmatch(r"(\D*)(\d+)", first), re.fullmatch(r"(\D*)(\d+)", last)
    if not a or not b or a[1] != b[1]:
        return [first, last]
    width = len(a[2])
    return [f"{a[1]}{i:0{width}d}" for i in range(int(a[2]), int(b[2]) + 1)]


def _with_source_groups(root, items):
    listed = os.path.join(root, "videos.txt")
    if not os.path.isfile(listed):
        return items
    groups = read_videos_txt(listed)
    stems = [os.path.splitext(os.path.basename(p))[0] for p, _, _ in items]
    missing = [s for s in stems if s not in groups]
    if missing:
        log.warning("%s does not list %d clip(s) (e.g. %s): each is its own group",
                    listed, len(missing), missing[0])
    return [(p, label, groups.get(stem, f"clip:{stem}")) for (p, label, _), stem in zip(items, stems)]


def _read_csv(path):
    """The manifest's rows as dicts, header stripped of spaces; UTF-8, with or without the byte-
    order mark that Excel writes; an error naming the file for anything else."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            header = [h.strip() for h in reader.fieldnames or []]
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (byte {e.start}): save the manifest as UTF-8 CSV") from None
    except csv.Error as e:
        raise ValueError(f"{path}: not a readable CSV ({e})") from None
    return header, [{k.strip(): v for k, v in r.items() if k is not None} for r in rows]


def _from_csv(path):
    base = os.path.dirname(os.path.abspath(path))
    header, rows = _read_csv(path)
    if not {"path", "label"} <= set(header):
        raise ValueError(f"{path}: a manifest needs a header with 'path' and 'label' columns, got {header}")
    if not rows:
        raise ValueError(f"{path}: a manifest with no rows")
    for line, r in enumerate(rows, 2):
        for column in ("path", "label") + (("split",) if "split" in header else ()):
            if not (r.get(column) or "").strip():
                raise ValueError(f"{path}:{line}: no {column} in this row")
    classes = sorted({r["label"].strip() for r in rows})
    index = {c: i for i, c in enumerate(classes)}
    grouped = "group" in header
    items = [(os.path.join(base, r["path"].strip()), index[r["label"].strip()],
              (r.get("group") or "").strip() if grouped else None) for r in rows]
    splits = None
    if "split" in header:  # {clip path: "train", "val" or "test"}, the run's split as given
        bad = sorted({r["split"].strip() for r in rows} - {"train", "val", "test"})
        if bad:
            raise ValueError(f"{path}: the split column takes 'train', 'val' or 'test', not {bad}")
        splits = {p: r["split"].strip() for (p, _, _), r in zip(items, rows)}
    return items, classes, splits


def _from_prepared(root):
    manifest = load_manifest(root)
    clips = manifest["clips"]
    if not clips:
        raise ValueError(f"{root}: a prepared folder with no clips")
    grouped = any(c["group"] is not None for c in clips)
    return Listing([c["path"] for c in clips], [c["label"] for c in clips], [c["count"] for c in clips],
                   manifest["classes"], [(s["path"], s["reason"]) for s in manifest["skipped"]],
                   [c["group"] for c in clips] if grouped else None, [c["fps"] for c in clips],
                   os.path.abspath(root), list(range(len(clips))))


def clip_group(path, group):
    """The group of a clip in grouped data: its own, or, when it has none, a group of its own."""
    return group if group not in (None, "") else f"clip:{path}"


def _probe(path):
    try:
        return (*probe(path), None)
    except VideoError as e:
        return 0, 0.0, str(e).removeprefix(f"{path}: ")


def list_items(source):
    """(items [(path, label, group or None)], classes, splits {path: part} or None, hidden files)
    of a class-per-folder directory or a .csv manifest, listed without opening any video."""
    source = os.path.abspath(os.fspath(source))  # clip paths come out absolute: runs compare them later
    if not os.path.exists(source):
        raise FileNotFoundError(f"{source}: data source does not exist")
    if os.path.isdir(source):
        manifest = os.path.join(source, "manifest.csv")
        if os.path.isfile(manifest):
            return (*_from_csv(manifest), [])
        items, classes, hidden = _from_folder(source)
        return items, classes, None, hidden
    if source.endswith(".csv"):
        return (*_from_csv(source), [])
    raise ValueError(f"{source}: data must be a class-per-folder directory or a .csv manifest")


def list_clips(source, strict=False, workers=None, known=()):
    """A Listing of every usable clip under `source` (a directory or a .csv manifest). Paths in
    `known` (clips the caller already has) are not probed: they go to `listing.known`, and a
    listing of nothing new is then no error."""
    source = os.path.abspath(os.fspath(source))
    if os.path.isdir(source) and is_prepared(source):
        return _from_prepared(source)
    items, classes, splits, hidden = list_items(source)
    if known:
        known = set(known)
        listing_known = [p for p, _, _ in items if p in known]
        items = [item for item in items if item[0] not in known]
    # OpenCV releases the GIL while decoding, so threads probe files in parallel.
    with ThreadPoolExecutor(workers or os.cpu_count()) as pool:
        probes = list(bar(pool.map(_probe, [p for p, _, _ in items]), "probing videos", len(items), "video"))
    grouped = any(g is not None for _, _, g in items)
    listing = Listing([], [], [], classes, [], [] if grouped else None, [], hidden=hidden,
                      known=listing_known if known else [])
    for (path, label, group), (count, fps, reason) in zip(items, probes):
        if reason is None:
            listing.paths.append(path)
            listing.labels.append(label)
            listing.counts.append(count)
            listing.fps.append(fps)
            if grouped:
                listing.groups.append(clip_group(path, group))
            continue
        if strict:
            raise VideoError(f"{path}: {reason}")
        log.warning("skipping %s: %s", path, reason)
        listing.skipped.append((path, reason))
    if not listing.paths and not listing.known:
        raise ValueError(f"{source}: no usable video files ({len(listing.skipped)} skipped)")
    if splits:
        listing.splits = [splits[p] for p in listing.paths]
    return listing


VIDEO_EXTENSIONS = {".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp",
                    ".ogv", ".ts", ".mts"}


def video_files(paths):
    """The files named in `paths`, with each folder replaced by the video files under it (by
    extension, hidden files passed over), in order; a missing path is kept, to fail by name."""
    found = []
    for path in paths:
        if not os.path.isdir(path):
            found.append(path)
            continue
        for folder, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            found += [os.path.join(folder, f) for f in sorted(files)
                      if not f.startswith(".") and os.path.splitext(f)[1].lower() in VIDEO_EXTENSIONS]
    return found
