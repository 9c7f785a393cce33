"""`--set key=value` overrides for config dataclasses, typed by the field's default."""
import dataclasses
import json
import math


def _parse(field, text):
    kind = type(field.default) if field.default is not dataclasses.MISSING else str
    if kind is bool:
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{field.name}: expected true/false, got {text!r}")
    if kind is tuple:
        try:
            values = json.loads(text if text.startswith("[") else f"[{text}]")
        except ValueError:
            values = None
        if not isinstance(values, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                   for v in values):
            raise ValueError(f"{field.name}: expected comma-separated numbers such as "
                             f"{','.join(map(str, field.default))}, got {text!r}")
        return tuple(values)
    try:
        value = kind(text)
    except ValueError:
        raise ValueError(f"{field.name}: expected {kind.__name__}, got {text!r}") from None
    if kind is float and not math.isfinite(value):
        raise ValueError(f"{field.name}: expected a finite number, got {text!r}")
    return value


def override(config, assignments):
    """A copy of `config` with each 'key=value' in `assignments` applied."""
    fields = {f.name: f for f in dataclasses.fields(config)}
    changes = {}
    for item in assignments or ():
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set {item!r}: expected key=value")
        if key not in fields:
            raise ValueError(f"--set {key}: unknown key; known keys: {', '.join(sorted(fields))}")
        changes[key] = _parse(fields[key], value)
    new = dataclasses.replace(config, **changes)
    validate = getattr(new, "validate", None)
    if validate:
        validate()
    return new


def as_sets(config):
    """--set strings that rebuild `config` on any preset."""
    text = lambda v: ",".join(map(str, v)) if isinstance(v, tuple) else str(v)
    return [f"{k}={text(v)}" for k, v in dataclasses.asdict(config).items()]


def from_dict(cls, values):
    """Rebuild a config dataclass from its saved dict (lists back to tuples)."""
    known = {f.name: f for f in dataclasses.fields(cls)}
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in known})


def check_choices(config, choices):
    """A ValueError naming the first field of `choices` ({field: allowed values}) whose value is not allowed."""
    for key, allowed in choices.items():
        value = getattr(config, key)
        if value not in allowed:
            names = [repr(a) for a in allowed]
            raise ValueError(f"{key} must be {', '.join(names[:-1])} or {names[-1]}, got {value!r}")


def check_fractions(config, fields):
    """A ValueError naming the first of `fields` ({field: whether 1 itself is allowed}) outside
    [0, 1] (or [0, 1))."""
    for key, one_allowed in fields.items():
        value = getattr(config, key)
        if not (0 <= value <= 1 if one_allowed else 0 <= value < 1):
            raise ValueError(f"{key} must be in [0, 1{']' if one_allowed else ')'}, got {value}")


def validate_split(config):
    """The split fields of a config that has `split`, `val_fraction` and `test_fraction`."""
    check_split_fractions(config)
    check_choices(config, {"split": ("auto", "grouped", "stratified")})


def check_split_fractions(config):
    """`val_fraction` in (0, 1) and `test_fraction` in [0, 1), together below 1."""
    if not (0 < config.val_fraction < 1 and 0 <= config.test_fraction < 1
            and config.val_fraction + config.test_fraction < 1):
        raise ValueError(f"val_fraction ({config.val_fraction}) must be in (0, 1) and test_fraction "
                         f"({config.test_fraction}) in [0, 1), together below 1")
