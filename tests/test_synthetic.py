"""The generated default data: real video files, deterministic, and only time tells classes apart."""
import dataclasses
import json
import os

import numpy as np
import pytest

from sora_tf.data import synthetic
from sora_tf.data.sources import list_clips
from sora_tf.data.video import read_frames
from tests.conftest import history_epochs


def test_layout_and_manifest(tiny_data):
    meta = json.load(open(os.path.join(tiny_data, "dataset.json")))
    assert meta["classes"] == list(synthetic.CLASSES)
    listing = list_clips(tiny_data)
    assert len(listing.paths) == 7 * 6 and not listing.skipped
    assert set(listing.counts) == {16}


def test_deterministic(tmp_path):
    a = synthetic.generate(str(tmp_path / "a"), "tiny", seed=5)
    b = synthetic.generate(str(tmp_path / "b"), "tiny", seed=5)
    clip = os.path.join("rotate", "rotate_0002.mp4")
    fa = read_frames(os.path.join(a, clip), range(16), (48, 48))
    fb = read_frames(os.path.join(b, clip), range(16), (48, 48))
    np.testing.assert_array_equal(fa, fb)


def test_ensure_builds_once(tmp_path):
    first = synthetic.ensure("tiny", root=str(tmp_path))
    stamp = os.path.getmtime(os.path.join(first, "dataset.json"))
    assert synthetic.ensure("tiny", root=str(tmp_path)) == first
    assert os.path.getmtime(os.path.join(first, "dataset.json")) == stamp
    assert not [d for d in os.listdir(tmp_path) if d.startswith(".partial-")]


def test_ensure_rebuilds_a_cache_of_another_size(tmp_path, monkeypatch):
    """A cached dataset built with other variant settings (say fewer clips per class) is stale."""
    first = synthetic.ensure("tiny", root=str(tmp_path))
    bigger = dataclasses.replace(synthetic.VARIANTS["tiny"], clips_per_class=7)
    monkeypatch.setitem(synthetic.VARIANTS, "tiny", bigger)
    assert synthetic.ensure("tiny", root=str(tmp_path)) == first
    assert len(list_clips(first).paths) == 7 * 7


def test_motion_classes_move_and_static_does_not():
    spec = synthetic.Variant(clips_per_class=1, size=64, frames=12, jitter=0.0)
    def motion(cls):
        frames = synthetic.render_clip(cls, spec, np.random.default_rng(1)).astype(float)
        return np.abs(frames[-1] - frames[0]).mean()
    assert all(motion(c) > motion("static") for c in ("left", "right", "up", "down", "zoom", "rotate"))


@pytest.mark.slow
def test_one_frame_model_stays_near_chance_on_directions(tmp_path):
    """No single frame gives a direction away: sora_cls limited to one frame cannot learn them.

    (The companion claim, that the full sora_cls does learn them, is measured on the default
    run's confusion matrix; at a CI-sized dataset it does not train far enough to assert it.)
    """
    from sora_tf.train.evaluate import evaluate
    from sora_tf.train.run import train

    synthetic.VARIANTS["directions"] = dataclasses.replace(synthetic.VARIANTS["default"],
                                                           clips_per_class=40, size=64, frames=16)
    try:
        data = synthetic.generate(str(tmp_path / "d"), "directions", seed=1)
    finally:
        del synthetic.VARIANTS["directions"]
    manifest = os.path.join(data, "directions.csv")
    with open(os.path.join(data, "manifest.csv")) as f, open(manifest, "w") as g:
        g.writelines(line for line in f if line.split(",")[-1].strip() in ("label", "left", "right", "up", "down"))
    run = train("sora_cls", manifest, str(tmp_path / "one_frame"), epochs=30, verbose=0,
                sets=["recipe=network", "num_frames=1", "batch_size=8", "val_fraction=0.25", "patience=30"])
    metrics = evaluate(run)
    assert history_epochs(run) == list(range(30)), "the one-frame model got its full training budget"
    assert metrics["accuracy"] < 0.45, metrics["accuracy"]  # chance is 0.25 over four directions
