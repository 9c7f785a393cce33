"""Frame sampling and the tf.data pipeline, each op eagerly and inside tf.data."""
import os

import numpy as np
import pytest
import tensorflow as tf

from sora_tf.data.pipeline import DecodeFailures, make_dataset
from sora_tf.data.sampling import crop_views, sample_indices, view_indices
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
        fn = lambda n, sd: sample_indices(n, 5, True, sd, stride_range=3)  # noqa: E731
        idx, padded = fn(np.int64(20), seed) if where == "eager" else _in_tf_data(fn, np.int64(20), seed)
        idx = idx.numpy()
        steps = np.diff(idx)
        # the eval stride spans the video: 19 / 4 = 4.75; training draws 4.75 / 3 .. 4.75
        assert steps.min() >= 1 and steps.max() <= 5
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


@pytest.mark.parametrize("where", ["eager", "tf.data"])
def test_fps_stride_covers_the_same_time_span(where):
    # 10 s at 30 fps and at 15 fps, sampled at 5 fps: 8 frames 0.2 s apart, centred, in both.
    def run(n, stride):
        fn = lambda m, s: sample_indices(m, 8, False, stride=s)  # noqa: E731
        return (fn(n, stride) if where == "eager" else _in_tf_data(fn, n, stride))[0].numpy()
    fast, slow = run(np.int64(300), np.float32(30 / 5)), run(np.int64(150), np.float32(15 / 5))
    assert np.diff(fast).tolist() == [6] * 7 and np.diff(slow).tolist() == [3] * 7
    assert abs(fast.mean() / 30 - slow.mean() / 15) < 0.1  # same moment of the video
    assert run(np.int64(20), np.float32(30 / 5)).tolist() == sample_indices(20, 8, False)[0].numpy().tolist()


@pytest.mark.parametrize("where", ["eager", "tf.data"])
def test_view_indices_spread_over_the_video(where):
    fn = lambda n: view_indices(n, 4, 3, stride=2.0)  # noqa: E731
    views = (fn(np.int64(31)) if where == "eager" else _in_tf_data(fn, np.int64(31))).numpy()
    assert views.tolist() == [[0, 2, 4, 6], [12, 14, 16, 18], [24, 26, 28, 30]]
    assert view_indices(4, 4, 3).numpy().tolist() == [[0, 1, 2, 3]] * 3


def test_multi_view_dataset_and_crops(tiny_data):
    listing = list_clips(tiny_data)
    ds = make_dataset(listing.paths[:3], listing.labels[:3], listing.counts[:3], clip_len=4,
                      size=(24, 24), training=False, batch_size=3, views=2)
    batch = next(iter(ds))
    assert batch["frames"].shape == (3, 2, 4, 24, 24, 3)
    single = make_dataset(listing.paths[:3], listing.labels[:3], listing.counts[:3], clip_len=4,
                          size=(24, 24), training=False, batch_size=3)
    first = next(iter(single))["frames"].numpy()
    np.testing.assert_array_equal(batch["frames"].numpy()[:, 0, 0], first[:, 0])  # both start at frame 0
    crops = crop_views(batch["frames"], 3).numpy()
    assert crops.shape == (3, 6, 4, 24, 24, 3)
    assert not np.allclose(crops[:, 0], crops[:, 2]) and not np.allclose(crops[:, 2], crops[:, 4])


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


def test_crop_views_left_centre_right():
    ramp = np.tile(np.arange(32, dtype=np.float32)[None, :, None], (16, 1, 3))  # value = column
    clips = np.broadcast_to(ramp, (2, 1, 4, 16, 32, 3)).copy()  # [B, V, T, H, W, 3]
    crops = crop_views(tf.constant(clips), 3).numpy()
    assert crops.shape == (2, 3, 4, 16, 32, 3)
    left, centre, right = (crops[:, i].mean() for i in range(3))
    assert left < centre < right and abs(centre - ramp.mean()) < 0.5
    np.testing.assert_allclose(crops[:, 0, :, 0], crops[:, 0, :, -1], atol=1e-4)  # rows unchanged
    np.testing.assert_array_equal(crop_views(tf.constant(clips), 1), clips)  # one view: the whole frame
    with pytest.raises(ValueError, match="1 or 3"):
        crop_views(tf.constant(clips), 2)


def _write(path, frames, fourcc="MJPG"):
    import cv2

    h, w = frames[0].shape[:2]
    color = frames[0].ndim == 3
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10, (w, h), isColor=color)
    for f in frames:
        writer.write(f)
    writer.release()
    return str(path)


def test_odd_videos_flow_through_the_pipeline(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "data" / "odd"
    folder.mkdir(parents=True)
    _write(folder / "one_frame.avi", [rng.integers(0, 255, (32, 32, 3), np.uint8)])
    _write(folder / "gray.avi", [rng.integers(0, 255, (24, 40), np.uint8) for _ in range(5)])
    _write(folder / "tiny_17x9.avi", [rng.integers(0, 255, (9, 17, 3), np.uint8) for _ in range(6)])
    _write(folder / "uhd.avi", [np.full((2160, 3840, 3), 200, np.uint8) for _ in range(2)])
    listing = list_clips(str(tmp_path / "data"), strict=True)
    assert len(listing.paths) == 4 and sorted(listing.counts) == [1, 2, 5, 6]
    ds = make_dataset(listing.paths, listing.labels, listing.counts, clip_len=4, size=(16, 16),
                      training=False, batch_size=4)
    batch = next(iter(ds))
    assert batch["frames"].shape == (4, 4, 16, 16, 3)
    padded = dict(zip([os.path.basename(p.decode()) for p in batch["path"].numpy()], batch["padded"].numpy()))
    assert padded == {"gray.avi": False, "one_frame.avi": True, "tiny_17x9.avi": False, "uhd.avi": True}
    uhd = batch["frames"].numpy()[[os.path.basename(p.decode()) for p in batch["path"].numpy()].index("uhd.avi")]
    assert abs(int(uhd.mean()) - 200) <= 3  # resized whole, colour kept
