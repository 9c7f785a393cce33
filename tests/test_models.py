"""One harness every model in the zoo passes, through the model contract only: build, a
training step, save and reload with equal outputs, SavedModel and float32 TFLite export whose
outputs equal Keras's.

A new model gets the whole harness by adding its name to MODELS.
"""
import dataclasses
import json
import os

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf

from sora_tf import export, models, train
from sora_tf.config import override
from sora_tf.export import parity, tflite

MODELS = ["sora_cls", "sora_cls recipe=motion", "sora_vaegan", "sora_det"]  # a name, and --set overrides


def _model(key):
    """(name, module, tiny config with the key's overrides) of a MODELS entry."""
    name, *sets = key.split()
    module = models.get(name)
    return name, module, override(module.Config.tiny(), sets)


def _clips(config, b=2):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (b, config.num_frames, config.image_size, config.image_size, 3)).astype("uint8")


def _clip_batch(config):
    return _clips(config), np.array([0, 1])


def _detection_batch(config):
    """Clips at the training crop's size, and the targets of two boxes a frame."""
    from sora_tf.train.detect import render_targets

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (2, config.num_frames, config.crop_height, config.crop_width, 3)).astype("uint8")
    boxes = np.tile(np.array([[4, 8, 20, 40], [30, 10, 50, 60]], np.float32), (config.num_frames, 1, 1))
    heat, sides = render_targets(boxes, np.zeros((config.num_frames, 2), np.int32), config.crop_height,
                                 config.crop_width, config)
    return x, {"heatmap": np.stack([heat] * 2), "sides": np.stack([sides] * 2)}


def _clip_export_inputs(config, tmp_path):
    clips = _clips(config, 3)
    labels = np.arange(3) % config.num_classes
    return (clips, labels), (clips, labels)


def _detection_export_inputs(config, tmp_path):
    from sora_tf.data import synthetic_det
    from sora_tf.data.mot import FrameSet, load_sequence

    sequence = load_sequence(synthetic_det.generate(str(tmp_path / "walkers"), "tiny"), config.size)
    return FrameSet(sequence, range(40, 50)), FrameSet(sequence, range(10))


# What each task's harness feeds: a training batch (x, y) and export's (val, calib).
TRAIN_BATCH = {"classify": _clip_batch, "generate": _clip_batch, "detect": _detection_batch}
EXPORT_INPUTS = {"classify": _clip_export_inputs, "generate": _clip_export_inputs, "detect": _detection_export_inputs}


@pytest.mark.parametrize("key", MODELS)
def test_build_train_step_save_reload(key, tmp_path):
    name, module, config = _model(key)
    model = module.build(config)
    x, y = TRAIN_BATCH[module.task](config)
    out = model(x, training=False)
    assert all(np.isfinite(np.asarray(v)).all() for v in out.values())

    before = [w.copy() for w in model.get_weights()]
    history = train.task(name).trainer(model, config, 1).fit(x, y, epochs=1, verbose=0).history
    assert all(np.isfinite(v).all() for v in history.values())
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))

    path = str(tmp_path / f"{name}.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path)
    for key, value in model(x).items():
        np.testing.assert_allclose(reloaded(x)[key], value, atol=1e-6)
    assert reloaded.config == model.config


@pytest.mark.slow
@pytest.mark.parametrize("key", MODELS)
def test_saved_model_and_float32_tflite_equal_keras(key, tmp_path):
    name, module, config = _model(key)
    model = module.build(config)
    classes = [f"class{i}" for i in range(config.num_classes)]
    val, calib = EXPORT_INPUTS[module.task](config, tmp_path)
    result = export.task(name).export(model, classes, str(tmp_path), name, val, calib,
                                      {"run": "harness"}, variants=("float32",))
    assert os.path.basename(result["saved_model"]) == "1"
    assert tf.saved_model.load(result["saved_model"]).signatures  # reloads, with named signatures
    assert result["tflite"] and all(p.endswith("float32.tflite") for p in result["tflite"].values())
    for path in result["tflite"].values():
        assert tflite.flex_ops(path) == [] and tflite.read_labels(path)[0] == classes
    with open(os.path.join(os.path.dirname(next(iter(result["tflite"].values()))), "parity.json")) as f:
        assert json.load(f) == result["parity"]
    artifacts = [p["artifact"] for p in result["parity"]]
    assert any(a.startswith("saved_model") for a in artifacts)
    assert {f"tflite_{k}" for k in result["tflite"]} <= set(artifacts)
    for entry in result["parity"]:  # every artifact's outputs against Keras's, on (at least) these clips
        assert entry["num_clips"] >= 3 and entry["max_rel_diff"] < 0.01, entry


def test_parity_entry_measures_the_largest_difference():
    entry = parity.entry("x", [[0.5, 0.5], [1.0, 0.0]], [[0.5, 0.5], [0.8, 0.2]], accuracy=1.0)
    assert entry["num_clips"] == 2 and entry["accuracy"] == 1.0
    assert entry["max_abs_diff"] == pytest.approx(0.2) and entry["max_rel_diff"] == pytest.approx(0.25)
    assert "max_abs_diff" in parity.table([entry]).splitlines()[0]


def test_every_model_meets_the_contract():
    for key in MODELS:
        name, module, _ = _model(key)
        assert dataclasses.is_dataclass(module.Config) and callable(module.Config.tiny)
        assert callable(train.task(name).fit) and callable(export.task(name).export)
        assert callable(train.task(name).prepare) and callable(train.task(name).default_data)
        assert callable(export.task(name).export_inputs)
    with pytest.raises(ValueError, match="is not a model"):
        models.get("blocks")


def test_sora_cls_outputs():
    config = models.get("sora_cls").Config.tiny()
    out = models.get("sora_cls").build(config)(_clips(config), training=False)
    assert out["probabilities"].shape == (2, config.num_classes)
    assert out["embedding"].shape == (2, config.embedding_dim)
    np.testing.assert_allclose(np.sum(out["probabilities"], 1), 1.0, rtol=1e-5)


def test_normal_flow_reads_the_motion_whatever_the_contrast():
    from sora_tf.models.blocks import normal_flow

    yy, xx = np.mgrid[0:32, 0:32].astype(np.float32)

    def frame(shift, contrast):  # a soft vertical edge at x = 12 + shift, normalised units
        return np.repeat((contrast / (1 + np.exp(-(xx - 12 - shift))))[None, ..., None], 3, -1)

    flows = []
    for contrast in (2.0, 4.0):  # 128 and 255 grey levels, moving 0.5 px to the right
        flow = np.asarray(normal_flow(frame(0.5, contrast), frame(0.0, contrast), gain=1.0))[0]
        assert flow[16, 12:14, 0] == pytest.approx(0.5, abs=0.05)  # x: the shift, in pixels
        np.testing.assert_allclose(flow[1:-1, :, 1], 0.0, atol=1e-6)  # y: nothing moves that way (inside the border)
        flows.append(flow[16, 11:15, 0])
    np.testing.assert_allclose(flows[0], flows[1], atol=0.1)  # where the frame difference doubles
    assert np.abs(np.asarray(normal_flow(frame(0.0, 2.0), frame(0.0, 2.0)))).max() == 0.0  # still: none


def test_named_sub_models():
    model = models.get("sora_cls").build(models.get("sora_cls").Config.tiny())
    assert isinstance(model.get_layer("frame_features").layer, keras.Model)
    assert model.get_layer("frame_features").layer.name == "frame_cnn"
    vaegan = models.get("sora_vaegan").build(models.get("sora_vaegan").Config.tiny())
    for name in ("encoder", "decoder", "discriminator"):
        assert isinstance(vaegan.get_layer(name), keras.Model)


def test_sora_cls_variants_build():
    module = models.get("sora_cls")
    for sets in (["rnn=gru", "rnn_layers=2"], ["frame_diff=false"], ["normal_flow=true", "appearance=false"]):
        config = override(module.Config.tiny(), sets)
        out = module.build(config)(_clips(config, 1))
        assert out["embedding"].shape == (1, config.embedding_dim)


def test_unknown_model_and_bad_overrides():
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        models.get("nope")
    config = models.get("sora_cls").Config.tiny()
    with pytest.raises(ValueError, match="unknown key"):
        override(config, ["rnn_unitz=3"])
    with pytest.raises(ValueError, match="expected int"):
        override(config, ["rnn_units=many"])
    with pytest.raises(ValueError, match="rnn must be"):
        override(config, ["rnn=transformer"])
    with pytest.raises(ValueError, match="label_smoothing must be"):
        override(config, ["label_smoothing=1"])
    with pytest.raises(ValueError, match=r"aug_warp_fraction must be in \[0, 1\], got 1.5"):
        override(config, ["aug_warp_fraction=1.5"])
    with pytest.raises(ValueError, match="normal_flow=true feed the CNN what frame_diff makes"):
        override(config, ["frame_diff=false", "normal_flow=true"])
    with pytest.raises(ValueError, match="key=value"):
        override(config, ["rnn_units"])
    assert override(config, ["cnn_widths=4,8,8", "aug_flip=false"]).cnn_widths == (4, 8, 8)
    with pytest.raises(ValueError, match=r"val_fraction \(0.5\) must be in \(0, 1\) and test_fraction \(0.5\)"):
        override(models.get("sora_det").Config.tiny(), ["val_fraction=0.5", "test_fraction=0.5"])
    assert dataclasses.replace(config).rnn_units == 32


# Where a saved run's weights are stored: Keras names them by layer class and the order in which
# it walks a model's layers, not by the layer names we give, so a change in the layers a model
# builds moves them and runs saved before no longer load (or load into the wrong layers). Recorded
# (tests/data/saved_weights.json) from the models the current default runs were saved with.
SAVED_LAYOUT = os.path.join(os.path.dirname(__file__), "data", "saved_weights.json")
LAYOUTS = {"sora_cls": (), "sora_cls normal_flow=true": ("normal_flow=true",), "sora_cls recipe=motion": ("recipe=motion",), "sora_vaegan": (), "sora_vaegan max_shift=2": ("max_shift=2",), "sora_det": ()}


def _saved_layout(key, tmp_path):
    """[where in the weights file, shape, the variable saved there] for the tiny config of `key`."""
    name = key.split()[0]
    module = models.get(name)
    model = module.build(override(module.Config.tiny(), LAYOUTS[key]))
    for i, variable in enumerate(model.weights):  # each variable holds its own index, to find it by
        variable.assign(np.full(variable.shape, i, variable.dtype))
    path = str(tmp_path / f"{name}.weights.h5")
    model.save_weights(path)
    found = []
    with h5py.File(path) as f:
        f.visititems(lambda n, o: found.append([n, list(o.shape), model.weights[int(np.ravel(o[()])[0])].path])
                     if isinstance(o, h5py.Dataset) else None)
    return sorted(found)


@pytest.mark.parametrize("key", sorted(LAYOUTS))
def test_saved_weights_keep_their_names(key, tmp_path):
    with open(SAVED_LAYOUT) as f:
        recorded = json.load(f)[key]
    found = _saved_layout(key, tmp_path)
    moved = sorted({str(n) for n in recorded} ^ {str(n) for n in found})
    assert found == recorded, (
        f"{key}: the weights of a saved run are no longer where this model looks for them, so runs "
        f"saved before will not load (in the recorded list or the built model only: {moved[:12]}). Build "
        f"the graph in the same order, or load old runs without what was added (as "
        f"SoraVaeGan.load_own_variables does for a prior variable added last), then update "
        f"{SAVED_LAYOUT}; if old runs are meant to break, say so in the README.")


@pytest.mark.parametrize("name", ["sora_cls", "sora_vaegan"])
def test_a_saved_config_without_the_added_fields_reads_the_values_runs_had_then(name, tmp_path):
    from sora_tf.train.run import _saved_config

    module = models.get(name)
    values = {k: v for k, v in dataclasses.asdict(module.Config.tiny()).items() if k not in module.ADDED_FIELDS}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(values))
    config = _saved_config(module, str(path))  # as --resume reads it
    assert {k: getattr(config, k) for k in module.ADDED_FIELDS} == module.ADDED_FIELDS
    assert {k: getattr(module.Config.tiny(), k) for k in module.ADDED_FIELDS} != module.ADDED_FIELDS  # today's differ


def test_a_run_saved_before_mean_pooling_loads_with_its_last_state(tmp_path):
    module = models.get("sora_cls")
    old = module.build(override(module.Config.tiny(), ["pooling=last"]))
    saved = old.get_config()
    del saved["config"]["pooling"]  # as a run written before the field existed
    reloaded = type(old).from_config(saved)
    assert reloaded.config.pooling == "last"
    reloaded.set_weights(old.get_weights())
    x, _ = _clip_batch(reloaded.config)
    np.testing.assert_allclose(reloaded(x)["probabilities"], old(x)["probabilities"], atol=1e-6)
