"""Frame sampling and the tf.data pipeline, each op eagerly and inside tf.data."""
import os

import numpy as np
import pytest
import tensorflow as tf

from sora_tf.data.pipeline import DecodeFailures, make_dataset, sample_indices
from sora_tf.data.sources import list_clips


def _in_tf_data(fn, *args):
    ds = tf.data.Dataset.from_tensors(tuple(tf.constant(a) for a in args)).map(lambda *a: fn(*a))
    return next(iter(ds))


@pytest.mark.parametrize("where", ["eager", "tf.data"])
def test_eval_indices_uniform(where):
    run = (lambda n: sample_indices(n, 4, False)) if where == "eager" else \
        (lambda n: _in_tf_data(lambda m: sample_indices(m, 4, False), n))
    idx, padded = run(np.int64(31))
    assert idx.numpy().tolist() == [0, 10, 20, 30] and not padded.numpy()
    idx, padded = run(np.int64(2))
    assert idx.numpy().tolist() == [0, 0, 1, 1] and padded.numpy()


@pytest.mark.parametrize("where", ["eager", "tf.data"])
def test_train_indices_random_start_and_stride(where):
    seen_strides, seen_starts = set(), set()
    for s in range(40):
        seed = np.array([s, 7], np.int64)
        fn = lambda n, sd: sample_indices(n, 5, True, sd, max_stride=3)  # noqa: E731
        idx, padded = fn(np.int64(20), seed) if where == "eager" else _in_tf_data(fn, np.int64(20), seed)
        idx = idx.numpy()
        steps = np.diff(idx)
        assert steps.min() >= 1 and steps.max() <= 3
        assert steps.max() - steps.min() <= 1  # one fractional stride, rounded
        assert idx[0] >= 0 and idx[-1] <= 19 and not padded.numpy()
        seen_strides.add(round(float(idx[-1] - idx[0]) / 4, 1))
        seen_starts.add(int(idx[0]))
    assert len(seen_strides) > 1 and len(seen_starts) > 3


def test_train_indices_repeatable_from_seed():
    seed = tf.constant([1, 2], tf.int64)
    a, _ = sample_indices(100, 8, True, seed, 4)
    b, _ = sample_indices(100, 8, True, seed, 4)
    assert a.numpy().tolist() == b.numpy().tolist()


def test_dataset_shapes_and_eval_determinism(tiny_data):
    listing = list_clips(tiny_data)
    kwargs = dict(clip_len=4, size=(24, 24), batch_size=5)
    ds = make_dataset(listing.paths, listing.labels, listing.counts, training=False, **kwargs)
    first = [b["frames"].numpy() for b in ds]
    second = [b["frames"].numpy() for b in ds]
    assert first[0].shape == (5, 4, 24, 24, 3) and first[0].dtype == np.uint8
    assert sum(len(b) for b in first) == len(listing.paths)
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    train = make_dataset(listing.paths, listing.labels, listing.counts, training=True, **kwargs)
    assert next(iter(train))["frames"].shape == (5, 4, 24, 24, 3)


def test_short_video_is_padded_and_says_so(tiny_data):
    listing = list_clips(tiny_data)
    ds = make_dataset(listing.paths[:1], [0], [listing.counts[0]], clip_len=40, size=(16, 16),
                      training=False, batch_size=1)
    batch = next(iter(ds))
    assert batch["padded"].numpy().tolist() == [True] and batch["frames"].shape[1] == 40


def test_file_broken_after_listing_is_dropped_and_counted(tiny_data, tmp_path):
    listing = list_clips(tiny_data)
    broken = tmp_path / "gone.mp4"
    broken.write_bytes(b"junk")
    paths = listing.paths[:3] + [str(broken)]
    failures = DecodeFailures()
    ds = make_dataset(paths, [0, 1, 2, 3], listing.counts[:3] + [10], clip_len=4, size=(16, 16),
                      training=False, batch_size=2, failures=failures)
    labels = np.concatenate([b["label"].numpy() for b in ds])
    assert labels.tolist() == [0, 1, 2]
    assert [os.path.basename(p) for p, _ in failures.paths] == ["gone.mp4"]
