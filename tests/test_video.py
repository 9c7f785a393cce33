"""Decoding: counts from decoding, broken files named in errors, odd frames fitted."""
import os

import numpy as np
import pytest

from sora_tf.data.video import VideoError, count_frames, fit_frame, read_frames, write_video
from tests.conftest import shared


def _video(path, n=10, h=24, w=32, value=None):
    frames = np.stack([np.full((h, w, 3), (i * 20) % 256 if value is None else value, np.uint8) for i in range(n)])
    return write_video(str(path), frames, fps=10)


def test_count_and_read(tmp_path):
    path = _video(tmp_path / "a.mp4", n=10)
    assert count_frames(path) == 10
    clip = read_frames(path, [0, 0, 3, 9], (16, 16))
    assert clip.shape == (4, 16, 16, 3) and clip.dtype == np.uint8
    means = clip.reshape(4, -1).mean(1)
    assert means[0] == pytest.approx(means[1]) and means[0] < means[2] < means[3]


def test_read_past_the_end_repeats_last_frame(tmp_path):
    path = _video(tmp_path / "a.mp4", n=5)
    clip = read_frames(path, [3, 4, 7, 9], (8, 8))
    assert np.array_equal(clip[1], clip[2]) and np.array_equal(clip[2], clip[3])


def test_read_rejects_unsorted_indices(tmp_path):
    with pytest.raises(ValueError, match="non-decreasing"):
        read_frames(_video(tmp_path / "a.mp4"), [3, 1], (8, 8))


def _broken(tmp_path):
    cases = {}
    cases["empty"] = tmp_path / "empty.mp4"
    cases["empty"].write_bytes(b"")
    cases["random"] = tmp_path / "random.mp4"
    cases["random"].write_bytes(np.random.default_rng(0).bytes(5000))
    cases["text"] = tmp_path / "notes.txt"
    cases["text"].write_text("not a video\n")
    cases["directory"] = tmp_path / "x.mp4"
    cases["directory"].mkdir()
    cases["missing"] = tmp_path / "missing.mp4"
    good = open(_video(tmp_path / "good.mp4", n=12, h=64, w=64), "rb").read()
    cases["truncated"] = tmp_path / "truncated.mp4"
    cases["truncated"].write_bytes(good[: len(good) // 3])
    return cases


@pytest.mark.parametrize("case", ["empty", "random", "text", "directory", "missing", "truncated"])
def test_broken_files_raise_named_errors(tmp_path, case):
    path = _broken(tmp_path)[case]
    with pytest.raises(VideoError) as err:
        count_frames(path)
    assert str(path) in str(err.value)


def test_fit_frame_handles_gray_bgra_odd_and_huge():
    assert fit_frame(np.zeros((9, 17), np.uint8), (8, 8)).shape == (8, 8, 3)
    assert fit_frame(np.zeros((9, 17, 4), np.uint8), (8, 8)).shape == (8, 8, 3)
    big = np.zeros((2160, 3840, 3), np.uint8)
    big[:, :1920, 2] = 255  # left half red in BGR
    small = fit_frame(big, (16, 16))
    assert small.shape == (16, 16, 3) and small[:, :8, 0].min() == 255 and small[:, 8:, 0].max() == 0


def test_unreadable_file(tmp_path):
    path = _video(tmp_path / "locked.mp4")
    os.chmod(path, 0)
    try:
        if os.access(path, os.R_OK):
            pytest.skip("running as a user that can read mode-000 files (root)")
        with pytest.raises(VideoError, match="not readable"):
            count_frames(path)
    finally:
        os.chmod(path, 0o644)


def test_shared_formats_decode_with_true_counts():
    folder = shared("formats")
    counts = {name: count_frames(os.path.join(folder, name)) for name in sorted(os.listdir(folder))}
    assert all(n > 0 for n in counts.values()), counts
    assert counts["tree.avi"] == 68
    assert counts["flipping_a_pancake.mkv"] == 310
