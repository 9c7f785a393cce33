"""Models are found by name: `MODEL=sora_cls` is `sora_tf/models/sora_cls.py`.

Every model module exposes `Config` (a dataclass with defaults and a `tiny()` preset) and
`build(config) -> keras.Model`.
"""
import importlib


def get(name):
    """The module of model `name`, with a clear error for a name that does not exist."""
    if not name.isidentifier():
        raise ValueError(f"model name {name!r} is not a module name")
    try:
        return importlib.import_module(f"sora_tf.models.{name}")
    except ModuleNotFoundError as e:
        if e.name == f"sora_tf.models.{name}":
            raise ValueError(f"unknown model {name!r}: no sora_tf/models/{name}.py") from None
        raise
