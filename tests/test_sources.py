"""Listing data sources: bad files skipped, named and counted; CSV manifests; splits."""
import csv
import os
import shutil

import numpy as np
import pytest

from sora_tf.data.sources import list_clips
from sora_tf.data.split import stratified_split
from sora_tf.data.video import VideoError


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
