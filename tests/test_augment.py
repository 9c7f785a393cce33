"""Augmentation is one draw per clip, and never touches eval clips."""
import numpy as np
import pytest
import tensorflow as tf

from sora_tf.data.augment import ClipAugment


def _static_clips(b=4, t=6, s=32):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (b, 1, s, s, 3)).astype("float32")
    return np.repeat(image, t, axis=1)


def _augment(layer, clips, training, where):
    if where == "eager":
        return np.asarray(layer(clips, training=training))
    ds = tf.data.Dataset.from_tensors(clips).map(lambda c: layer(c, training=training))
    return next(iter(ds)).numpy()


@pytest.mark.parametrize("where", ["eager", "tf.data"])
def test_every_frame_of_a_clip_gets_the_same_transform(where):
    clips = _static_clips()
    layer = ClipAugment(zoom=0.3, translate=0.2, rotation_deg=15, flip=True, noise_std=0, seed=1)
    out = _augment(layer, clips, True, where)
    assert out.shape == clips.shape
    assert not np.allclose(out, clips), "augmentation changed nothing"
    for clip in out:
        for frame in clip[1:]:
            np.testing.assert_allclose(frame, clip[0], atol=1e-3)
    assert not np.allclose(out[0, 0], out[1, 0] - clips[1, 0] + clips[0, 0]), "clips share a draw"


@pytest.mark.parametrize("where", ["eager", "tf.data"])
def test_eval_is_never_augmented(where):
    clips = _static_clips()
    out = _augment(ClipAugment(seed=1), clips, False, where)
    np.testing.assert_array_equal(out, clips)


def test_noise_is_applied_in_training_and_output_in_range():
    clips = _static_clips()
    out = np.asarray(ClipAugment(zoom=0, translate=0, rotation_deg=0, flip=False, brightness=0,
                                 contrast=0, saturation=0, hue=0, noise_std=8.0, seed=2)(clips, training=True))
    assert 2.0 < np.abs(out - clips).mean() < 12.0 and out.min() >= 0 and out.max() <= 255


def test_warp_fraction_leaves_the_other_clips_pixels_exactly():
    clips = _static_clips(b=32)
    layer = ClipAugment(zoom=0.2, translate=0.1, rotation_deg=10, flip=False, brightness=0, contrast=0,
                        saturation=0, hue=0, noise_std=0, warp_fraction=0.5, seed=3)
    out = np.asarray(layer(clips, training=True))
    kept = np.array([np.array_equal(o, c) for o, c in zip(out, clips)])
    assert 4 <= kept.sum() <= 28, f"{kept.sum()} of 32 clips kept their pixels at warp_fraction=0.5"
    assert all(np.abs(o - c).mean() > 1.0 for o, c in zip(out[~kept], clips[~kept])), "a warped clip barely moved"
    none = ClipAugment(zoom=0.2, translate=0.1, rotation_deg=10, flip=False, brightness=0, contrast=0,
                       saturation=0, hue=0, noise_std=0, warp_fraction=0.0, seed=3)
    np.testing.assert_array_equal(np.asarray(none(clips, training=True)), clips)
