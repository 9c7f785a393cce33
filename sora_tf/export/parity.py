"""Parity of exported artifacts with the Keras model: one entry per artifact, one table."""
import numpy as np


def entry(artifact, got, want, **extra):
    """{"artifact", "num_clips", "max_abs_diff", "max_rel_diff", **extra}: how far an artifact's
    outputs `got` are from Keras's `want` (same shape, first axis clips); `max_rel_diff` is the
    largest difference over the largest |want|, comparable across outputs of any scale."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    diff = float(np.abs(got - want).max()) if got.size else 0.0
    return {"artifact": artifact, "num_clips": int(len(want)), "max_abs_diff": diff,
            "max_rel_diff": diff / max(float(np.abs(want).max()) if want.size else 0.0, 1e-12), **extra}


def table(parity):
    """A text table of parity entries, one row each, a column per key any entry has."""
    keys = list(dict.fromkeys(k for p in parity for k in p))

    def cell(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return "" if v is None else str(v)
    rows = [keys] + [[cell(p.get(k)) for k in keys] for p in parity]
    widths = [max(len(r[i]) for r in rows) for i in range(len(keys))]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
                     for r in rows)
