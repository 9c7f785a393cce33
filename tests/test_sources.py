"""Listing data sources: bad files skipped, named and counted; CSV manifests; splits."""
import csv
import os
import shutil

import numpy as np
import pytest

from sora_tf.data.sources import list_clips, read_videos_txt
from sora_tf.data.split import grouped_split, stratified_split
from sora_tf.data.video import VideoError
from tests.conftest import shared


@pytest.fixture
def dirty_data(tiny_data, tmp_path):
    root = tmp_path / "dirty"
    for cls in ("left", "right"):
        shutil.copytree(os.path.join(tiny_data, cls), root / cls)
    (root / "left" / "corrupt.mp4").write_bytes(b"\x00\x01garbage" * 100)
    (root / "left" / "empty.mp4").write_bytes(b"")
    (root / "right" / "readme.txt").write_text("hello")
    return root


def test_folder_listing_skips_and_counts_bad_files(dirty_data, caplog):
    listing = list_clips(dirty_data)
    assert listing.classes == ["left", "right"]
    assert len(listing.paths) == 12
    skipped = {os.path.basename(p) for p, _ in listing.skipped}
    assert skipped == {"corrupt.mp4", "empty.mp4", "readme.txt"}
    assert listing.summary()["skipped"] == 3
    assert "corrupt.mp4" in caplog.text


def test_strict_makes_a_bad_file_an_error(dirty_data):
    with pytest.raises(VideoError, match="corrupt.mp4|empty.mp4"):
        list_clips(dirty_data, strict=True)


def test_csv_manifest(tiny_data, tmp_path):
    manifest = tmp_path / "m.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label"])
        for cls in ("up", "down"):
            for name in sorted(os.listdir(os.path.join(tiny_data, cls))):
                w.writerow([os.path.join(tiny_data, cls, name), cls])
    listing = list_clips(manifest)
    assert listing.classes == ["down", "up"] and len(listing.paths) == 12


def test_missing_and_bad_sources(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        list_clips(tmp_path / "nowhere")
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(ValueError, match="x.json"):
        list_clips(tmp_path / "x.json")
    with pytest.raises(ValueError, match="no class folders"):
        list_clips(tmp_path)


def test_stratified_split_is_deterministic_and_stratified():
    labels = [0] * 20 + [1] * 10 + [2] * 5
    tr, va = stratified_split(labels, 0.2, seed=3)
    assert (tr, va) == stratified_split(labels, 0.2, seed=3)
    assert not set(tr) & set(va) and len(tr) + len(va) == len(labels)
    assert np.bincount(np.asarray(labels)[va]).tolist() == [4, 2, 1]
    assert stratified_split(labels, 0.2, seed=4) != (tr, va)


def test_videos_txt_groups_clips_by_source(tmp_path):
    listed = tmp_path / "videos.txt"
    listed.write_text("https://example.com/a\nfi001: 0.1 - 0.2\nnofi001: 1 - 2\n"
                      "https://example.com/b\nfi002: 0 - 1\nnofi001: 3 - 4\n"
                      "nofi010 - nofi012 : Some dataset\n")
    groups = read_videos_txt(listed)
    assert groups["fi001"] == groups["nofi001"] == groups["fi002"], "sources sharing a clip merge"
    assert groups["nofi010"] == groups["nofi011"] == groups["nofi012"] == "Some dataset"
    listed.write_text("not a url or a clip line\n")
    with pytest.raises(ValueError, match="videos.txt:1"):
        read_videos_txt(listed)


def test_grouped_split_keeps_each_group_on_one_side():
    rng = np.random.default_rng(0)
    groups = [f"g{i // 5}" for i in range(200)]  # 40 groups of 5 clips, one class per group
    labels = [int(rng.integers(0, 2)) if i % 5 == 0 else None for i in range(200)]
    labels = [labels[i - i % 5] for i in range(200)]
    train, val = grouped_split(labels, groups, 0.2, seed=0)
    assert not {groups[i] for i in train} & {groups[i] for i in val}
    assert sorted(train + val) == list(range(200))
    for c in (0, 1):
        share = sum(labels[i] == c for i in val) / labels.count(c)
        assert 0.1 <= share <= 0.3, (c, share)
    assert grouped_split(labels, groups, 0.2, seed=0) == (train, val)
    assert grouped_split(labels, groups, 0.2, seed=1) != (train, val)
    with pytest.raises(ValueError, match="cannot split 1 group"):
        grouped_split([0, 1], ["g", "g"], 0.2, seed=0)


def _manifest_with(data, path, column, value):
    """`data`'s manifest.csv with absolute paths and one more column, `value(row index)`."""
    rows = list(csv.DictReader(open(os.path.join(data, "manifest.csv"))))
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", column])
        for i, r in enumerate(rows):
            writer.writerow([os.path.join(data, r["path"]), r["label"], value(i)])
    return path


def test_csv_group_column_and_grouped_run_split(tiny_data, tmp_path):
    from sora_tf.models.sora_cls import Config
    from sora_tf.train.clips import make_split

    manifest = _manifest_with(tiny_data, tmp_path / "grouped.csv", "group", lambda i: f"src{i // 2}")
    listing = list_clips(str(manifest))
    split = make_split(listing, Config())
    assert split["method"] == "grouped"
    assert not {listing.groups[i] for i in split["train"]} & set(split["val_groups"])
    assert make_split(listing, Config(split="stratified"))["method"] == "stratified"
    with pytest.raises(ValueError, match="needs groups"):
        make_split(list_clips(tiny_data), Config(split="grouped"))


def test_manifest_split_column_is_the_run_split(tiny_data, tmp_path):
    from sora_tf.models.sora_cls import Config
    from sora_tf.train.clips import make_split

    manifest = _manifest_with(tiny_data, tmp_path / "split.csv", "split", lambda i: "val" if i % 3 == 0 else "train")
    rows = list(csv.DictReader(open(os.path.join(tiny_data, "manifest.csv"))))
    listing = list_clips(str(manifest))
    split = make_split(listing, Config())
    assert split["method"] == "manifest"
    assert split["val"] == list(range(0, len(rows), 3))
    assert listing.subset(split["val"]).splits == ["val"] * len(split["val"])
    assert split["test"] == []  # none given, none made
    manifest = _manifest_with(tiny_data, tmp_path / "split3.csv", "split",
                              lambda i: ("val", "train", "test")[i % 3])
    split = make_split(list_clips(str(manifest)), Config())
    assert split["test"] == list(range(2, len(rows), 3)) and split["test_paths"]
    with open(manifest, "a") as f:
        f.write(f"{os.path.join(tiny_data, rows[0]['path'])},{rows[0]['label']},holdout\n")
    with pytest.raises(ValueError, match="'train', 'val' or 'test', not \\['holdout'\\]"):
        list_clips(str(manifest))


def test_fight_surv_split_is_grouped_by_source():
    data = shared("fight_surv")
    from sora_tf.models.sora_cls import Config
    from sora_tf.train.clips import make_split

    listing = list_clips(data)
    assert len(set(listing.groups)) >= 20
    split = make_split(listing, Config())
    assert split["method"] == "grouped"
    assert not {listing.groups[i] for i in split["train"]} & {listing.groups[i] for i in split["val"]}
    assert {listing.labels[i] for i in split["val"]} == {0, 1}
