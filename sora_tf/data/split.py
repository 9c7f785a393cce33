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


def grouped_split(labels, groups, val_fraction, seed):
    """(train_indices, val_indices) with every group wholly on one side.

    Groups are visited in a seeded random order and a group goes to validation while that
    brings its classes closer to `val_fraction` of their clips; so the split is near-stratified
    and deterministic. Every class that spans two or more groups gets a validation group.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    labels = np.asarray(labels)
    names = sorted(set(groups))
    index = {g: i for i, g in enumerate(names)}
    member = np.array([index[g] for g in groups])
    classes = np.unique(labels)
    counts = np.zeros((len(names), labels.max() + 1))
    np.add.at(counts, (member, labels), 1)
    target = val_fraction * counts.sum(0)
    in_val = np.zeros(len(names), bool)
    val_counts = np.zeros_like(target)
    for g in np.random.default_rng(seed).permutation(len(names)):
        after = val_counts + counts[g]
        if np.abs(after - target)[classes].sum() < np.abs(val_counts - target)[classes].sum():
            in_val[g], val_counts = True, after
    for c in classes:  # a class left without validation clips takes its smallest group
        spans = np.flatnonzero(counts[:, c])
        if val_counts[c] == 0 and len(spans) >= 2:
            g = spans[np.argmin(counts[spans].sum(1))]
            in_val[g], val_counts = True, val_counts + counts[g]
    val = np.flatnonzero(in_val[member])
    train = np.flatnonzero(~in_val[member])
    if not len(train) or not len(val):
        raise ValueError(f"cannot split {len(names)} group(s) into train and validation")
    return train.tolist(), val.tolist()
