"""sora_cls's motion recipe: the optical flow in TF ops, its 36 statistics as running sums, the
stream against the clip, the recipe chosen by how many sources there are, and what it exports."""
import dataclasses
import json
import os

import cv2
import numpy as np
import pytest
import tensorflow as tf

from sora_tf import export, models
from sora_tf.cli import main
from sora_tf.config import override
from sora_tf.data import motion
from sora_tf.models import flow
from sora_tf.train.clips import validation_trains
from tests.conftest import shared

sora_cls = models.get("sora_cls")


def _texture(size=64, seed=0):
    """A smooth random grey texture, 0-255."""
    noise = np.random.default_rng(seed).uniform(0, 255, (size, size)).astype(np.float32)
    return cv2.GaussianBlur(noise, (0, 0), 2.0) * 4 - 384


def _shifted(image, dx, dy):
    return cv2.warpAffine(image, np.float32([[1, 0, dx], [0, 1, dy]]), image.shape[::-1], flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT101)


def test_lucas_kanade_recovers_a_shift():
    a = _texture()
    for dx, dy in ((1.5, -0.75), (3.0, 2.0)):  # the second needs the pyramid (beyond the window's reach at full size)
        b = _shifted(a, dx, dy)
        f = flow.lk_flow(tf.constant(a[None]), tf.constant(b[None]), window=9, levels=2, iterations=2).numpy()[0]
        inner = f[12:-12, 12:-12]
        np.testing.assert_allclose(np.median(inner.reshape(-1, 2), 0), [dx, dy], atol=0.15)


def test_stripes_move_across_not_still():
    """One-directional texture: the damped solve gives the flow across the stripes."""
    x = np.arange(64, dtype=np.float32)
    a = np.tile(128 + 100 * np.sin(x / 3.0), (64, 1))
    b = np.tile(128 + 100 * np.sin((x - 1.0) / 3.0), (64, 1))
    f = flow.lk_flow(tf.constant(a[None]), tf.constant(b[None])).numpy()[0, 8:-8, 8:-8]
    assert abs(np.median(f[..., 0]) - 1.0) < 0.2 and abs(np.median(f[..., 1])) < 0.05


def test_running_statistics_are_the_baselines_numbers():
    """Added flow by flow, the state gives sora_tf.data.motion.statistics of all the flows."""
    rng = np.random.default_rng(0)
    flows = rng.normal(0, 0.6, (2, 9, 32, 40, 2)).astype(np.float32)
    flows[1, :, 10:20, 10:30] += [2.0, -1.0]  # a moving block in the second clip
    state = flow.MotionState(tf.zeros([2, 32, 40, 5]), tf.zeros([2, flow.SUMS]), tf.zeros([2, 1]))
    for t in range(flows.shape[1]):
        state = state.update(tf.constant(flows[:, t]), tf.zeros([2, 32, 40]))
    got = state.statistics().numpy()
    motion_moving = motion.MOVING
    try:
        motion.MOVING = flow.MOVING * 40  # the baseline's threshold is in pixels at its width
        for clip, row in zip(flows, got):
            np.testing.assert_allclose(row[:28], motion.statistics(clip), rtol=2e-4, atol=2e-5)
            m = np.hypot(clip[..., 0], clip[..., 1])
            moving = m > motion.MOVING
            shares = np.histogram(np.arctan2(clip[..., 1], clip[..., 0])[moving], 8, (-np.pi, np.pi),
                                  weights=m[moving])[0]
            np.testing.assert_allclose(row[28:], shares / shares.sum(), rtol=2e-4, atol=2e-5)
    finally:
        motion.MOVING = motion_moving
    assert got.shape == (2, flow.NUM_STATS) == (2, len(motion.NAMES) + 8)
    assert np.argmax(got[1, 28:]) == 3  # the block moving right and up: bin [-pi/4, 0) has the largest share


def test_change_histogram_is_numpys_edges_included():
    counts = tf.constant(np.array([7, 0, 14, 13], np.float32).reshape(1, 2, 2))  # 7 / 14: on the 0.5 edge
    changes = tf.constant([[14.0]])
    expected = np.histogram(np.array([7, 0, 14, 13]) / 14, 10, (0, 1))[0] / 4
    for compiled in (None, False, True):
        fn = flow.change_histogram if compiled is None else tf.function(flow.change_histogram, jit_compile=compiled)
        np.testing.assert_array_equal(fn(counts, changes).numpy()[0], expected)


def test_predict_equals_call_on_real_clips():
    """Keras's graph (`predict`) and eager calls agree. They did not on fight_surv clips while the
    histogram divided the counts: pixels on the 0.5 edge changed bins (0.09 of the frame)."""
    from sora_tf.data.sources import list_clips
    from sora_tf.data.video import read_frames

    listing = list_clips(shared("fight_surv"))
    clips = np.stack([read_frames(p, np.round(np.linspace(0, n - 1, 16)).astype(np.int64), (64, 64))
                      for p, n in list(zip(listing.paths, listing.counts))[:16]])
    model = sora_cls.build(dataclasses.replace(sora_cls.Config(), recipe="motion", num_classes=2, image_size=64))
    np.testing.assert_allclose(model.predict(clips, verbose=0)["embedding"], model(clips)["embedding"], atol=1e-4)


def _motion_config(**changes):
    return dataclasses.replace(sora_cls.Config.tiny(), recipe="motion", num_classes=3, **changes)


def _moving_clips(config, batch=2):
    """A texture drifting a different way in each clip, as uint8 [B, T, S, S, 3]."""
    s, t = config.image_size, config.num_frames
    base = _texture(s + 40)
    clips = np.zeros((batch, t, s, s, 3), np.uint8)
    for b in range(batch):
        for k in range(t):
            shifted = _shifted(base, (b + 1) * 0.7 * k, -0.4 * k * b)[20:20 + s, 20:20 + s]
            clips[b, k] = np.clip(shifted, 0, 255)[..., None]
    return clips


@pytest.mark.parametrize("changes", [{}, {"image_size": 48, "motion_size": 20}])  # 48 px: halved, then resized
def test_stream_equals_the_clip_model(changes):
    config = _motion_config(**changes)
    model = sora_cls.build(config)
    assert model.stream_state_shapes()["state_maps"] == (config.flow_size, config.flow_size, 5)
    clips = _moving_clips(config)
    expected = model(clips, training=False)
    stream, state = model.stream(), model.init_states(2)
    for k in range(config.num_frames):
        out = stream({"frame": clips[:, k].astype(np.float32), **state}, training=False)
        state = {name: np.asarray(out[name]) for name in state}
    for key in ("probabilities", "embedding"):
        np.testing.assert_allclose(out[key], expected[key], rtol=1e-4, atol=1e-5)
    assert not np.allclose(expected["embedding"][0], expected["embedding"][1])  # the clips' motions differ


def test_the_recipe_follows_the_number_of_sources():
    auto = dataclasses.replace(sora_cls.Config(), recipe="auto")
    few, many = auto.for_data(sora_cls.MOTION_SOURCES - 1), auto.for_data(sora_cls.MOTION_SOURCES)
    assert (few.recipe, few.learning_rate) == ("motion", auto.motion_learning_rate)
    assert (few.aug_noise_std, few.stride_range, few.aug_warp_fraction) == (0.0, 1.0, 1.0)
    assert (many.recipe, many.learning_rate, many.aug_warp_fraction) == ("network", auto.learning_rate, 0.5)
    # The network reads 96 px frames; the motion recipe decodes at its flow's size.
    assert (many.image_size, few.image_size, few.flow_size) == (96, 64, 64)
    assert dataclasses.replace(auto, image_size=48).for_data(3).image_size == 48
    assert dataclasses.replace(auto, motion_size=128, image_size=128).for_data(3).image_size == 128
    assert dataclasses.replace(auto, backbone="mobilenet_v3_small").for_data(3).recipe == "network"
    assert dataclasses.replace(auto, num_frames=1).for_data(3).recipe == "network"  # no flow in one frame
    pinned = dataclasses.replace(auto, recipe="network")
    assert pinned.for_data(3) == pinned
    # The motion recipe trains on the validation clips, unless told not to or a monitor needs them.
    assert (few.train_on_val, many.train_on_val) == ("true", "auto")
    assert dataclasses.replace(auto, train_on_val="false").for_data(3).train_on_val == "false"
    assert dataclasses.replace(auto, monitor="val_loss").for_data(3).train_on_val == "false"
    # A model built without data (no choice made) is the network, as runs saved before recipes were.
    assert sora_cls.build(sora_cls.Config.tiny()).get_layer("frame_features")


def test_bad_motion_settings_are_named():
    config = sora_cls.Config.tiny()
    with pytest.raises(ValueError, match="recipe must be"):
        override(config, ["recipe=flow"])
    with pytest.raises(ValueError, match="motion_window must be odd"):
        override(config, ["motion_window=8"])
    with pytest.raises(ValueError, match="coarsest pyramid level"):
        override(config, ["recipe=motion", "image_size=8"])
    with pytest.raises(ValueError, match="parts of the network"):
        override(config, ["recipe=motion", "backbone=efficientnet_b0"])
    with pytest.raises(ValueError, match="num_frames >= 3"):
        override(config, ["recipe=motion", "num_frames=2"])
    with pytest.raises(ValueError, match="train_on_val must be"):
        override(config, ["train_on_val=yes"])
    with pytest.raises(ValueError, match="no validation clips for monitor=val_accuracy"):
        override(config, ["train_on_val=true", "monitor=val_accuracy"])


def test_validation_trains_only_beside_a_test_part():
    split = {"method": "grouped", "train": [0, 3], "val": [1], "test": [2], "val_paths": ["b"], "test_paths": ["c"],
             "val_groups": ["g1"], "test_groups": ["g2"]}
    moved = validation_trains(split)
    assert (moved["train"], moved["val"], moved["val_paths"], moved["val_groups"]) == ([0, 1, 3], [], [], [])
    assert (moved["test"], moved["test_paths"], moved["trained_on_val"]) == ([2], ["c"], True)
    untested = {**split, "test": [], "test_paths": [], "test_groups": []}
    assert validation_trains(untested) == untested  # the validation clips are the run's only figure


def test_other_tflite_variants_are_refused_by_name(tmp_path):
    config = _motion_config()
    model = sora_cls.build(config)
    clips = _moving_clips(config, 3)
    with pytest.raises(ValueError, match="no float16/int8 TFLite form; it offers float32"):
        export.task("sora_cls").export(model, ["a", "b", "c"], str(tmp_path), "sora_cls", (clips, np.arange(3)),
                                       (clips, np.arange(3)), {"run": "test"}, variants=("float32", "float16", "int8"))
    assert not os.listdir(tmp_path)  # nothing half-written


@pytest.mark.slow
def test_auto_picks_motion_for_few_sources_and_the_run_exports(tiny_data, tmp_path, capsys):
    """The tiny data has 42 clips and no groups: auto trains the motion recipe, the run
    says so in its config, and `export` writes its float32 files, each equal to Keras."""
    out = str(tmp_path / "run")
    assert main(["train", "--model", "sora_cls", "--data", tiny_data, "--preset", "tiny", "--out", out,
                 "--set", "recipe=auto", "--set", "epochs=1"]) == 0
    with open(os.path.join(out, "config.json")) as f:
        saved = json.load(f)
    assert saved["recipe"] == "motion" and saved["learning_rate"] == saved["motion_learning_rate"]
    with open(os.path.join(out, "split.json")) as f:
        split = json.load(f)
    with open(os.path.join(out, "metrics.json")) as f:
        metrics = json.load(f)
    assert not split["val"] and split["test"] and len(split["train"]) + len(split["test"]) == 42  # val trained
    assert metrics["split"] == "test" and metrics["num_clips"] == len(split["test"])
    assert main(["export", out, "--out", str(tmp_path / "export")]) == 0
    folder = tmp_path / "export" / "sora_cls" / "tflite" / "1"
    assert sorted(os.listdir(folder)) == ["float32.tflite", "parity.json", "stream_float32.tflite"]
    with open(folder / "parity.json") as f:
        parity = {e["artifact"]: e for e in json.load(f)}
    for name in ("saved_model", "tflite_float32", "tflite_stream_float32"):
        assert parity[name]["max_abs_diff"] < 1e-4 and parity[name]["top1_agreement"] == 1.0, parity[name]
        assert parity[name]["num_clips"] == len(split["test"])  # checked on the test clips
    capsys.readouterr()
    video = os.path.join(tiny_data, "up", "up_0001.mp4")
    assert main(["stream", "--model", str(folder / "stream_float32.tflite"), video]) == 0  # the stream command runs it
    printed = capsys.readouterr().out
    assert printed.count("frame ") == 16 and json.loads(printed[printed.index("{"):])["frames"] == 16
