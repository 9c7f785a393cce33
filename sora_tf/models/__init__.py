"""Models are found by name: `MODEL=sora_cls` is `sora_tf/models/sora_cls.py`.

Every model module exposes the same contract, and generic code asks it nothing else:
- `Config`: a frozen dataclass with defaults, a `tiny()` preset and `validate()`;
- `build(config) -> keras.Model`, the model saving and reloading through its `get_config`;
- `task`: which task code fits, evaluates and exports it, `sora_tf/train/<task>.py` and
  `sora_tf/export/<task>.py`, shared by every model of that task.
A model with a clip embedding also has `embed(frames) -> [B, D]` (`sora_tf/embedding` uses it).
Optional: `Config.for_data(sources)`, the config for training data of that many sources (a task's
`prepare` calls it), `tflite_variants` on the model (the TFLite variants its export offers, when fewer than all),
and `ADDED_FIELDS` ({field: the value runs saved before it had}, for loading and resuming them).
Adding a model of an existing task is adding its file and its name to `tests/test_models.py`.
"""
import importlib

CONTRACT = ("Config", "build", "task")


def get(name):
    """The module of model `name`, with a clear error for a name that does not exist."""
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"model name {name!r} is not a module name")
    try:
        module = importlib.import_module(f"sora_tf.models.{name}")
    except ModuleNotFoundError as e:
        if e.name == f"sora_tf.models.{name}":
            raise ValueError(f"unknown model {name!r}: no sora_tf/models/{name}.py") from None
        raise
    missing = [k for k in CONTRACT if not hasattr(module, k)]
    if missing:
        raise ValueError(f"{name!r} is not a model: sora_tf/models/{name} has no {', '.join(missing)}")
    return module

