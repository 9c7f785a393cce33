"""One harness every model in the zoo passes: build, a training step, save/reload equality.

A new model gets the whole harness by adding its name to MODELS.
"""
import dataclasses
import json
import os

import h5py
import keras
import numpy as np
import pytest

from sora_tf import models
from sora_tf.config import override
from sora_tf.train.run import compile_trainer, trainer_for

MODELS = ["sora_cls", "sora_vaegan"]


def _clips(config, b=2):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (b, config.num_frames, config.image_size, config.image_size, 3)).astype("uint8")


def _train_step(module, model, config, x, y):
    """One fit step the way `train` runs the model: an augmenting trainer, or its own train_step."""
    if getattr(module, "TASK", "classify") == "generate":
        model.compile()
        return model.fit(x, y, epochs=1, verbose=0).history
    trainer = trainer_for(model, config)
    compile_trainer(trainer, config, steps_per_epoch=1)
    return trainer.fit(x, y, epochs=1, verbose=0).history


@pytest.mark.parametrize("name", MODELS)
def test_build_train_step_save_reload(name, tmp_path):
    module = models.get(name)
    config = module.Config.tiny()
    model = module.build(config)
    x = _clips(config)
    out = model(x, training=False)
    assert all(np.isfinite(np.asarray(v)).all() for v in out.values())

    before = [w.copy() for w in model.get_weights()]
    history = _train_step(module, model, config, x, np.array([0, 1]))
    assert all(np.isfinite(v).all() for v in history.values())
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))

    path = str(tmp_path / f"{name}.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path)
    for key, value in model(x).items():
        np.testing.assert_allclose(reloaded(x)[key], value, atol=1e-6)
    assert reloaded.config == model.config


def test_sora_cls_outputs():
    config = models.get("sora_cls").Config.tiny()
    out = models.get("sora_cls").build(config)(_clips(config), training=False)
    assert out["probabilities"].shape == (2, config.num_classes)
    assert out["embedding"].shape == (2, config.embedding_dim)
    np.testing.assert_allclose(np.sum(out["probabilities"], 1), 1.0, rtol=1e-5)


def test_named_sub_models():
    model = models.get("sora_cls").build(models.get("sora_cls").Config.tiny())
    assert isinstance(model.get_layer("frame_features").layer, keras.Model)
    assert model.get_layer("frame_features").layer.name == "frame_cnn"
    vaegan = models.get("sora_vaegan").build(models.get("sora_vaegan").Config.tiny())
    for name in ("encoder", "decoder", "discriminator"):
        assert isinstance(vaegan.get_layer(name), keras.Model)


def test_sora_cls_variants_build():
    module = models.get("sora_cls")
    for sets in (["rnn=gru", "rnn_layers=2"], ["frame_diff=false"]):
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
    with pytest.raises(ValueError, match="key=value"):
        override(config, ["rnn_units"])
    assert override(config, ["cnn_widths=4,8,8", "aug_flip=false"]).cnn_widths == (4, 8, 8)
    assert dataclasses.replace(config).rnn_units == 32


# Where a saved run's weights are stored: Keras names them by layer class and the order in which
# it walks a model's layers, not by the layer names we give, so a change in the layers a model
# builds moves them and runs saved before no longer load (or load into the wrong layers). Recorded
# (tests/data/saved_weights.json) from the models the current default runs were saved with.
SAVED_LAYOUT = os.path.join(os.path.dirname(__file__), "data", "saved_weights.json")
LAYOUTS = {"sora_cls": (), "sora_vaegan": (), "sora_vaegan max_shift=2": ("max_shift=2",)}


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
