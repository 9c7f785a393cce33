"""Deterministic train/validation splits."""
import numpy as np


def stratified_split(labels, val_fraction, seed):
    """(train_indices, val_indices): the same fraction of every class goes to validation.

    Depends only on the labels, the fraction and the seed, so a run and its resume (or a later
    `evaluate`) see the same split. Every class with two or more clips keeps at least one in each.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        rng.shuffle(members)
        n_val = int(round(len(members) * val_fraction))
        if len(members) >= 2:
            n_val = min(max(n_val, 1), len(members) - 1)
        val.extend(members[:n_val].tolist())
        train.extend(members[n_val:].tolist())
    return sorted(train), sorted(val)
