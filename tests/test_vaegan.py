"""sora_vaegan: shapes, the losses it logs, mixed precision, a tiny run end to end and its uses."""
import dataclasses
import json
import os
import re
import zipfile

import cv2
import keras
import numpy as np
import pytest

from sora_tf import cli
from sora_tf.data.video import count_frames, read_frames
from sora_tf.models import sora_vaegan
from sora_tf.models.vaegan import layers as vaegan_layers
from sora_tf.runs import load_clips
from sora_tf.train import anomaly, generate_eval
from sora_tf.train.run import train

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _clips(config, b=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (b, config.num_frames, config.image_size, config.image_size, 3)).astype("uint8")


def test_shapes_and_conditional_sampling():
    config = sora_vaegan.Config.tiny()
    model = sora_vaegan.build(config)
    x = _clips(config)
    out = model(x)
    assert out["reconstruction"].shape == x.shape
    assert out["z_mean"].shape == (4, *config.latent_shape)
    rec = np.asarray(out["reconstruction"])
    assert rec.min() >= 0 and rec.max() <= 1
    a = np.asarray(model.sample([0, 1], seed=3))
    np.testing.assert_allclose(a, np.asarray(model.sample([0, 1], seed=3)))  # seeded
    # The class reaches the decoder: same latent, another class, another clip.
    z = np.zeros((1, *config.latent_shape), np.float32)
    one = model.decoder(model.decoder_inputs(z, np.array([0])))
    two = model.decoder(model.decoder_inputs(z, np.array([1])))
    assert np.abs(np.asarray(one) - np.asarray(two)).max() > 0
    terms = model.anomaly_score(x)
    mse, kl = terms["reconstruction"], terms["kl"]
    assert mse.shape == (4,) and kl.shape == (4,) and np.all(np.asarray(kl) >= 0)
    # score: the squared error weighted as training weighs it (more where the clip changes) + KL
    xf, rec = np.asarray(x, np.float32) / 255.0, np.asarray(model.reconstruct(x))
    weight = 1 + config.motion_weight * np.minimum(np.abs(xf - xf.mean(1, keepdims=True)).mean(-1, keepdims=True) / 0.1, 1)
    weighted = (weight * np.square(xf - rec)).sum((1, 2, 3, 4)) / (weight.sum((1, 2, 3, 4)) * 3)
    assert np.abs(weighted - np.asarray(mse)).max() > 1e-4  # not the plain error
    np.testing.assert_allclose(terms["score"], weighted + config.kl_weight * np.asarray(kl) * config.latent_shape[0]
                               / xf[0].size, rtol=1e-4)
    # temporal: the error of the frames other than the middle one over the middle frame's
    frame_mse = np.square(np.asarray(x, np.float32) / 255.0 - np.asarray(model.reconstruct(x))).mean(axis=(2, 3, 4))
    mid = config.num_frames // 2
    np.testing.assert_allclose(terms["temporal"], np.delete(frame_mse, mid, 1).mean(1) / frame_mse[:, mid], rtol=1e-4)


def test_fitted_prior_draws_near_each_class_and_checkpoints_without_one_load():
    # The Gaussian alone (without prior_motions, the frame codes' change is the Gaussian's too)
    config = dataclasses.replace(sora_vaegan.Config.tiny(), prior_motions=0)
    model = sora_vaegan.build(config)
    size = config.latent_shape[0]
    noise = np.random.default_rng(0).normal(size=(500, *config.noise_shape)).astype("float32")
    # Unfitted: the latent is the residual noise, N(0, I) (and the last numbers, where and whose
    # change, move nothing).
    np.testing.assert_allclose(np.asarray(model.latent_from_noise(noise, np.zeros(500))),
                               noise[:, config.prior_components:config.prior_components + size])
    # Posterior means of two classes, apart along one direction, each spread along its own
    # (class 0 along dimension 1 with dimension 3 following it, class 1 along dimension 2).
    rng = np.random.default_rng(1)
    labels = np.repeat([0, 1], 200)
    apart, spread0, spread1 = (np.zeros(size, np.float32) for _ in range(3))
    apart[0], spread0[[1, 3]], spread1[2] = 3.0, 1.0, 1.0
    spread = np.where(labels[:, None] == 0, spread0, spread1)
    z = (np.where(labels[:, None] == 0, -apart, apart) + rng.normal(size=(400, 1)) * 2 * spread
         + rng.normal(size=(400, size)) * 0.1).astype("float32")
    model.fit_prior(z, labels)
    for c, sign, wide, narrow in ((0, -1, 1, 2), (1, 1, 2, 1)):
        drawn = np.asarray(model.latent_from_noise(noise, np.full(500, c)))
        assert abs(drawn[:, 0].mean() - sign * 3.0) < 0.1
        own = z[labels == c].std(0)  # the fitted clips' spread (2.0 and 0.1 drawn, 200 clips)
        assert abs(drawn[:, wide].std() - own[wide]) < 0.15 and abs(drawn[:, narrow].std() - own[narrow]) < 0.02
        assert 1.6 < own[wide] < 2.4
    drawn = np.asarray(model.latent_from_noise(noise, np.zeros(500)))
    assert np.corrcoef(drawn[:, 1], drawn[:, 3])[0, 1] > 0.95  # the class's own covariance
    with pytest.raises(ValueError, match="N >= 2"):
        model.fit_prior(z[:1], labels[:1])
    # A checkpoint from before the prior has no variables for it: it keeps N(0, I).
    fresh = sora_vaegan.build(config)
    fresh.load_own_variables({})
    assert np.all(fresh.prior_scale.numpy() == 1.0)
    # One from before prior_where (mean, basis, scale, time) draws every clip at the middle.
    old = {str(i): v.numpy() for i, v in enumerate((model.prior_mean, model.prior_basis, model.prior_scale,
                                                      model.prior_time))}
    fresh.load_own_variables(old)
    np.testing.assert_allclose(np.asarray(fresh.latent_from_noise(noise[:5], np.zeros(5))),
                               np.asarray(model.latent_from_noise(noise[:5], np.zeros(5))), atol=1e-5)
    np.testing.assert_array_equal(fresh.prior_where.numpy()[:, 0], 1.0)


def test_roll_latent_moves_content_and_frame_codes_as_np_roll():
    config = sora_vaegan.Config.tiny()
    g, f, t, part = config.grid, config.frame_grid, config.num_frames, config.parts
    z = np.random.default_rng(0).normal(size=(3, config.latent_shape[0])).astype("float32")
    dy, dx = np.array([0, 1, -2]), np.array([3, -1, 9])
    moved = np.asarray(vaegan_layers.roll_latent(config, z, dy, dx))
    for i in range(3):
        content = z[i, part["content"]].reshape(g, g, -1)
        want = np.roll(content, (dy[i] * g // f, dx[i] * g // f), (0, 1))
        np.testing.assert_array_equal(moved[i, part["content"]].reshape(g, g, -1), want)
        frames = z[i, part["frames"]].reshape(t, f, f, -1)
        np.testing.assert_array_equal(moved[i, part["frames"]].reshape(t, f, f, -1),
                                      np.roll(frames, (dy[i], dx[i]), (1, 2)))
        np.testing.assert_array_equal(moved[i, part["motion"]], z[i, part["motion"]])


def test_motion_centres_find_where_a_clip_moves():
    config = sora_vaegan.Config.tiny()  # 32 px, an 8 x 8 frame grid of 4-px cells
    rng = np.random.default_rng(0)
    clips = np.clip(rng.normal(100, 4, (2, config.num_frames, 32, 32, 3)), 0, 255).astype("uint8")
    for i in range(config.num_frames):  # a bright square sliding right in rows 20-23 (cell row 5)
        clips[0, i, 20:24, 4 + 2 * i:8 + 2 * i] = 250
    centres = vaegan_layers.motion_centres(clips, config.frame_grid)
    assert abs(centres[0, 0] - 5.0) < 0.3 and 1.0 < centres[0, 1] < 3.5
    assert np.all(np.abs(centres[1] - 3.5) < 1.5)  # sensor noise only: nowhere in particular


def test_fitted_prior_draws_what_happens_apart_from_where():
    """Clips in which the same thing happens at one of four places: fitted where each happens
    (centres), a draw has it whole at one of the four, as often as the clips do; fitted without,
    the Gaussian draws it at all four at once, each with its own strength. (The Gaussian's own
    draw of the change: with prior_motions a draw takes a clip's change where that clip had it.)"""
    config = dataclasses.replace(sora_vaegan.Config.tiny(), prior_motions=0)
    model = sora_vaegan.build(config)
    t, f, part = config.num_frames, config.frame_grid, config.parts
    rng = np.random.default_rng(0)
    places = np.array([(2, 2), (2, 5), (5, 2), (5, 5)])
    where = rng.choice(4, 400, p=[0.4, 0.3, 0.2, 0.1])
    pattern = rng.normal(size=(t, 3, 3, config.frame_channels))
    z = 0.05 * rng.normal(size=(400, config.latent_shape[0]))
    frames = z[:, part["frames"]].reshape(400, t, f, f, -1)
    for i, (r, c) in enumerate(places[where]):
        frames[i, :, r - 1:r + 2, c - 1:c + 2] += rng.normal() * pattern
    z[:, part["frames"]] = frames.reshape(400, -1)
    noise = rng.normal(size=(500, *config.noise_shape)).astype("float32")

    def drawn_places(centres):
        model.fit_prior(z.astype("float32"), np.zeros(400), centres)
        drawn = np.asarray(model.latent_from_noise(noise, np.zeros(500)))[:, part["frames"]].reshape(500, t, f, f, -1)
        energy = np.stack([np.square(drawn[:, :, r - 1:r + 2, c - 1:c + 2]).sum((1, 2, 3, 4)) for r, c in places], 1)
        return energy.argmax(1), np.median(energy.max(1) / energy.sum(1))

    at, share = drawn_places(places[where].astype("float32"))
    assert share > 0.9  # at one place
    np.testing.assert_allclose(np.bincount(at, minlength=4) / 500, [0.4, 0.3, 0.2, 0.1], atol=0.06)
    assert drawn_places(None)[1] < 0.7  # at all four
    np.testing.assert_allclose(model.prior_where.numpy()[0, 0], 1.0)  # unaligned: all at the middle
    with pytest.raises(ValueError, match="one centre"):
        model.fit_prior(z.astype("float32"), np.zeros(400), places[:2])


def test_fitted_prior_keeps_the_frame_codes_residual_correlated_in_time():
    """Frame codes that stay put from frame to frame beyond the principal directions are drawn
    so (independent draws would flicker); the content's residual stays independent."""
    config = dataclasses.replace(sora_vaegan.Config.tiny(), prior_components=2)
    model = sora_vaegan.build(config)
    t, cs, fs = config.num_frames, config.content_size, config.frames_size
    rng = np.random.default_rng(0)
    z = rng.normal(size=(300, config.latent_shape[0])).astype("float32")
    z[:, cs:cs + fs] = np.tile(rng.normal(size=(300, fs // t)), (1, t)) + 0.1 * rng.normal(size=(300, fs))
    model.fit_prior(z, np.repeat([0, 1, 2], 100))
    noise = rng.normal(size=(400, *config.noise_shape)).astype("float32")
    drawn = np.asarray(model.latent_from_noise(noise, np.repeat([0, 1], 200)))
    frames = drawn[:, cs:cs + fs].reshape(400, t, -1)
    assert np.corrcoef(frames[:, 0].ravel(), frames[:, -1].ravel())[0, 1] > 0.9
    assert abs(frames.std() - 1.0) < 0.1  # the spread per number is kept
    content = drawn[:, :cs]
    assert abs(np.corrcoef(content[:, 0], content[:, 1])[0, 1]) < 0.2
    # A checkpoint fitted before the time correlation loads, and draws the residual independently.
    store = {str(i): v.numpy() for i, v in enumerate((model.prior_mean, model.prior_basis, model.prior_scale))}
    older = sora_vaegan.build(config)
    older.load_own_variables(store)
    np.testing.assert_array_equal(older.prior_scale.numpy(), model.prior_scale.numpy())
    np.testing.assert_array_equal(older.prior_time.numpy(), np.tile(np.eye(t), (7, 1, 1)))


def test_content_latent_sees_where_but_not_which_way():
    """The content part of the latent sees the middle frame and how much each pixel changes,
    not the direction of the change: a clip mirrored in time about its middle frame (every
    frame difference negated) has the same content and another motion vector."""
    config = sora_vaegan.Config.tiny()
    encoder = sora_vaegan.build(config).encoder
    rng = np.random.default_rng(1)
    x = rng.integers(96, 160, (2, config.num_frames, config.image_size, config.image_size, 3))  # y stays in 0..255
    y = 2 * x[:, config.num_frames // 2:config.num_frames // 2 + 1] - x  # y_t - y_(t-1) = -(x_t - x_(t-1))
    a, b = (np.asarray(encoder(c.astype("uint8"))["z_mean"]) for c in (x, y))
    n = config.content_size
    np.testing.assert_allclose(a[:, :n], b[:, :n], atol=1e-4)
    assert np.abs(a[:, n:] - b[:, n:]).max() > 1e-4
    z = x.copy()
    z[:, config.num_frames // 2] = 255 - z[:, config.num_frames // 2]
    c = np.asarray(encoder(z.astype("uint8"))["z_mean"])
    assert np.abs(a[:, :n] - c[:, :n]).max() > 1e-4


def _textured(size, seed=0):
    """A smooth random RGB image [size, size, 3] in 0..255 (block matching needs texture)."""
    low = np.random.default_rng(seed).uniform(0, 255, (size // 4, size // 4, 3)).astype("float32")
    return cv2.resize(low, (size, size), interpolation=cv2.INTER_CUBIC).clip(0, 255)


def test_camera_shifts_are_found_undone_and_redone():
    """Block matching finds a shaking camera's shifts to a fraction of a pixel; undoing them
    leaves frames that stay put, which code as still frame codes; the decoder's shift moves a
    frame as the camera did."""
    size, t = 48, 5
    image = _textured(size + 16)
    truth = np.array([[0, 0], [1.0, -2.0], [0.4, 0.7], [-1.5, 0.0], [2.6, -1.3]], np.float32)
    # frame i holds at p + truth[i] what the middle frame (index 2, truth (0.4, 0.7)) holds at p
    frames = np.stack([cv2.warpAffine(image, np.float32([[1, 0, dx], [0, 1, dy]]), (size + 16,) * 2,
                                      flags=cv2.INTER_CUBIC)[8:-8, 8:-8] for dx, dy in truth])[None]
    found = np.asarray(vaegan_layers.CameraShifts(4)(frames))[0]
    np.testing.assert_allclose(found, truth - truth[t // 2], atol=0.15)
    # Undone, the frames match the middle one (inside the border the shift brings in).
    still = np.asarray(vaegan_layers.ShiftFrames(4)(frames, -found[None]))[0]
    inner = (slice(4, -4), slice(4, -4))
    assert np.abs(still - still[t // 2])[:, inner[0], inner[1]].mean() < 0.1 * np.abs(frames[0] - frames[0][t // 2])[:, inner[0], inner[1]].mean()
    # Whole-pixel shifts move by whole pixels; half a pixel is the mean of the two neighbours.
    one = np.asarray(vaegan_layers.ShiftFrames(4)(frames[:, :1], np.float32([[[2.0, -1.0]]])))[0, 0]
    np.testing.assert_allclose(one[1:-6, 2:-6], frames[0, 0, 2:-5, :-8], atol=1e-3)  # out(p) = in(p - s)
    half = np.asarray(vaegan_layers.ShiftFrames(4)(frames[:, :1], np.float32([[[0.5, 0.0]]])))[0, 0]
    np.testing.assert_allclose(half[:, 1:-1], 0.5 * (frames[0, 0, :, 1:-1] + frames[0, 0, :, :-2]), atol=1e-3)
    # In the encoder: a still scene shaken by the camera has frame codes that stay put, and
    # its shift part is the measured shifts.
    config = dataclasses.replace(sora_vaegan.Config.tiny(), image_size=size, num_frames=t)
    clip = np.round(frames).astype("uint8")
    cs, fs = config.content_size, config.frames_size
    spread = {}
    for shift in (4, 0):
        c = dataclasses.replace(config, max_shift=shift)
        keras.utils.set_random_seed(0)  # the same initial weights with and without shifts
        encoder = sora_vaegan.build(c).encoder
        z = np.asarray(encoder(clip)["z_mean"])[0]
        codes = z[cs:cs + fs].reshape(t, config.frame_grid, config.frame_grid, -1)[:, 2:-2, 2:-2]
        spread[shift] = codes.std(0).mean() / codes.std()
        if shift:
            np.testing.assert_allclose(z[-c.shift_size:].reshape(t, 2), found, atol=0.05)
    assert spread[4] < 0.5 * spread[0]


def test_fitted_prior_takes_the_change_over_time_from_a_training_clip_of_the_class():
    """A drawn clip's frame codes change over time exactly as one training clip of its class
    did, where that clip did, about their own time mean, which the Gaussian draws. A class
    without clips, or a run saved before the bank, draws the change from the Gaussian."""
    config = dataclasses.replace(sora_vaegan.Config.tiny(), prior_motions=8)
    model = sora_vaegan.build(config)
    t, f, part = config.num_frames, config.frame_grid, config.parts
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 30)
    z = rng.normal(size=(60, config.latent_shape[0])).astype("float32")
    centres = rng.uniform(0, f - 1, (60, 2)).astype("float32")
    model.fit_prior(z, labels, centres)
    assert list(model.prior_changes_count.numpy()[:3]) == [8, 8, 0]

    def change(latents):  # [N, T, f, f, c] about the time mean
        frames = latents[:, part["frames"]].reshape(len(latents), t, f, f, -1)
        return frames - frames.mean(1, keepdims=True)
    own = change(z)
    noise = rng.normal(size=(40, *config.noise_shape)).astype("float32")
    for c in (0, 1):
        drawn = change(np.asarray(model.latent_from_noise(noise, np.full(40, c))))
        # each equals one training clip's change, of its own class, at its own place
        match = np.abs(drawn[:, None] - own[None]).max(axis=(2, 3, 4, 5)) < 1e-4  # [40, 60]
        assert match.any(1).all() and np.all(labels[match.argmax(1)] == c)
        assert len(np.unique(match.argmax(1))) > 4  # several clips, not one
    gaussian = change(np.asarray(model.latent_from_noise(noise, np.full(40, 2))))
    assert not (np.abs(gaussian[:, None] - own[None]).max(axis=(2, 3, 4, 5)) < 1e-4).any()
    # Saved before the bank (its config has no prior_motions): none, and the noise it was drawn from.
    older = sora_vaegan.SoraVaeGan({k: v for k, v in dataclasses.asdict(config).items() if k != "prior_motions"})
    assert older.config.prior_motions == 0 and older.config.noise_shape[0] == config.noise_shape[0] - 1
    with pytest.raises(ValueError, match="prior_motions"):
        dataclasses.replace(config, prior_motions=-1).validate()


def test_fitted_prior_draws_camera_shifts_with_their_covariance():
    """The shift part is drawn as the class's shifts go: a random walk stays correlated in time."""
    config = dataclasses.replace(sora_vaegan.Config.tiny(), max_shift=4)
    model = sora_vaegan.build(config)
    t, ss = config.num_frames, config.shift_size
    rng = np.random.default_rng(0)
    z = rng.normal(size=(400, config.latent_shape[0])).astype("float32")
    walk = np.cumsum(rng.normal(0, 0.5, (400, t, 2)), axis=1)
    z[:, -ss:] = walk.reshape(400, ss)
    model.fit_prior(z, np.repeat([0, 1], 200))
    noise = rng.normal(size=(2000, *config.noise_shape)).astype("float32")
    drawn = np.asarray(model.latent_from_noise(noise, np.zeros(2000)))[:, -ss:].reshape(2000, t, 2)
    own = walk[:200]
    for a, b in ((0, 1), (0, t - 1)):
        want = np.corrcoef(own[:, a, 0], own[:, b, 0])[0, 1]
        assert abs(np.corrcoef(drawn[:, a, 0], drawn[:, b, 0])[0, 1] - want) < 0.1
    np.testing.assert_allclose(drawn.std(0), own.std(0), rtol=0.15)
    # A run saved before camera shifts (its config has no max_shift) loads without them.
    older = sora_vaegan.SoraVaeGan({k: v for k, v in dataclasses.asdict(config).items() if k != "max_shift"})
    assert older.config.max_shift == 0 and older.config.latent_shape[0] == config.latent_shape[0] - ss


def test_vae_only_has_no_gan_terms_and_bad_configs():
    config = sora_vaegan.Config.tiny()
    x, y = _clips(config), np.array([0, 1, 2, 3])
    gan = sora_vaegan.build(config)
    gan.compile()
    logs = gan.fit(x, y, epochs=1, verbose=0).history
    assert {"recon", "kl", "adv", "gen_class", "feature", "d_loss", "d_accuracy", "psnr"} <= set(logs)
    vae = sora_vaegan.build(sora_vaegan.Config(**{**config.__dict__, "gan": False}))
    vae.compile()
    d_before = [w.copy() for w in vae.discriminator.get_weights()]
    logs = vae.fit(x, y, epochs=1, verbose=0).history
    assert "adv" not in logs and "recon" in logs
    assert all(np.array_equal(a, b) for a, b in zip(d_before, vae.discriminator.get_weights()))
    for bad, match in ((dict(recon_loss="l3"), "recon_loss"), (dict(dec_widths=(8, 8)), "dec_widths"),
                       (dict(image_size=30), "divisible"), (dict(frame_widths=()), "frame_widths"), (dict(kl_weight=-1.0), "kl_weight"),
                       (dict(num_frames=1), "num_frames"), (dict(max_shift=-1), "max_shift"),
                       (dict(max_shift=7), "max_shift")):  # 32 px leaves no room to compare at +-7
        with pytest.raises(ValueError, match=match):
            sora_vaegan.Config(**{**config.__dict__, **bad}).validate()
    saved_before = {k: v for k, v in config.__dict__.items() if k != "frame_widths"}
    with pytest.raises(ValueError, match="earlier design"):
        sora_vaegan.SoraVaeGan(saved_before)  # a checkpoint of the earlier design: say so


def test_mixed_precision_step_is_finite():
    policy = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        config = sora_vaegan.Config.tiny()
        model = sora_vaegan.build(config)
        model.compile()
        assert isinstance(model.vae_optimizer, keras.optimizers.LossScaleOptimizer)
        logs = model.fit(_clips(config), np.array([0, 1, 2, 3]), epochs=1, verbose=0).history
        assert all(np.isfinite(v).all() for v in logs.values())
        assert model.get_layer("decoder").get_layer("draw_frames").layer.compute_dtype == "float16"
    finally:
        keras.mixed_precision.set_global_policy(policy)


def test_frechet_distance_and_auroc():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(500, 4))
    assert generate_eval.frechet_distance(a, a) == pytest.approx(0, abs=1e-6)
    shifted = generate_eval.frechet_distance(a, a + 2.0)
    assert shifted == pytest.approx(16.0, rel=1e-6)  # mean term only: 4 dims x 2^2
    wider = generate_eval.frechet_distance(a, 3 * rng.normal(size=(500, 4)))
    assert wider == pytest.approx(4 * (1 - 3) ** 2, rel=0.2)  # trace term: (sqrt(1) - sqrt(9))^2 per dim
    in_class_order = np.concatenate([a[:250], a[250:] + 5.0])  # two classes, one after the other
    assert generate_eval.real_halves_distance(in_class_order) < 1.0  # each half holds both classes
    assert generate_eval.frechet_distance(in_class_order[:250], in_class_order[250:]) > 90
    assert anomaly.auroc([1, 2, 3], [4, 5]) == 1.0
    assert anomaly.auroc([4, 5], [1, 2, 3]) == 0.0
    assert anomaly.auroc([1, 2], [1, 2]) == 0.5
    still = np.full((1, 4, 8, 8, 3), 128, np.uint8)
    flicker = still.copy()
    flicker[0, 1::2] = 0  # every other frame black: each change is 128/255 on every pixel
    assert anomaly.motion_energy(still)[0] == 0.0
    np.testing.assert_allclose(anomaly.motion_energy(flicker), [(128 / 255) ** 2], rtol=1e-6)


@pytest.fixture(scope="module")
def vaegan_run(tiny_data, tmp_path_factory):
    # With camera shifts, so that training, sampling, anomaly scores and export run through them.
    return train("sora_vaegan", tiny_data, str(tmp_path_factory.mktemp("runs") / "vaegan"),
                 sets=("max_shift=2",), preset="tiny", verbose=0)


@pytest.mark.slow
def test_tiny_run_trains_twin_and_judge_and_evaluates(vaegan_run, capsys):
    for part in ("best.keras", "last.keras", "history.csv", "tb", "vae_only/best.keras", "judge/best.keras",
                 "vae_only/epoch1.keras"):
        assert os.path.exists(os.path.join(vaegan_run, part)), part
    # The GAN started from the VAE's warm-up epoch: its first epoch is the second.
    warm = keras.saving.load_model(os.path.join(vaegan_run, "vae_only", "epoch1.keras"))
    assert warm.config.gan is False and warm.config.max_shift == 2  # the twin has the run's shifts
    with open(os.path.join(vaegan_run, "history.csv")) as f:
        header = f.readline().strip().split(",")
    assert {"recon", "kl", "adv", "feature", "d_loss", "val_psnr"} <= set(header)
    assert cli.main(["evaluate", vaegan_run]) == 0
    assert "vae_only" in capsys.readouterr().out
    with open(os.path.join(vaegan_run, "metrics.json")) as f:
        metrics = json.load(f)
    assert metrics["nan_in_history"] is False
    with open(os.path.join(vaegan_run, "classes.json")) as f:
        classes = json.load(f)
    for name in ("vaegan", "vae_only"):
        r, s = metrics[name]["reconstruction"], metrics[name]["samples"]
        assert np.isfinite([r["psnr"], r["ssim"], r["mse"], s["frechet_distance"], s["sharpness_vs_real"]]).all()
        assert 0 <= s["sample_accuracy"] <= 1 and 0 <= r["judge_accuracy"] <= 1
        # per class: every class named, and the overall figure their mean (equal counts per class)
        assert set(s["sample_accuracy_per_class"]) == set(classes)
        assert np.isclose(np.mean(list(s["sample_accuracy_per_class"].values())), s["sample_accuracy"])
        confusion = np.array(s["judge_confusion"]["rows_true_cols_pred"])
        assert (confusion.sum(1) == s["num_samples"] // len(classes)).all()
        assert np.isclose(np.trace(confusion) / s["num_samples"], s["sample_accuracy"])
    assert metrics["vaegan_fd_below_vae_only"] == (metrics["vaegan"]["samples"]["frechet_distance"]
                                                   < metrics["vae_only"]["samples"]["frechet_distance"])
    for path in metrics["pictures"].values():
        assert os.path.getsize(path) > 0
    assert count_frames(metrics["pictures"]["interpolation_video"]) == 8 * 4  # steps x frames


@pytest.mark.slow
def test_twin_is_measured_on_the_runs_sample_count(vaegan_run, monkeypatch):
    # A Frechet distance from fewer samples reads higher: the twin (saved with 4 per class) must be
    # measured on the run's count, here set to 2.
    load_run = generate_eval.load_run

    def with_two(path):
        model, config, classes, info = load_run(path)
        if os.path.abspath(path) == os.path.abspath(vaegan_run):
            config = dataclasses.replace(config, samples_per_class=2)
        return model, config, classes, info
    monkeypatch.setattr(generate_eval, "load_run", with_two)
    metrics = generate_eval.evaluate_generative(vaegan_run)
    with open(os.path.join(vaegan_run, "classes.json")) as f:
        classes = len(json.load(f))
    assert metrics["vaegan"]["samples"]["num_samples"] == metrics["vae_only"]["samples"]["num_samples"] == 2 * classes


@pytest.mark.slow
def test_resume_continues_with_optimizer_state(vaegan_run, tmp_path):
    model = keras.saving.load_model(os.path.join(vaegan_run, "last.keras"))
    steps = int(model.vae_optimizer.iterations.numpy())
    assert steps > 0 and int(model.d_optimizer.iterations.numpy()) == steps
    import shutil
    run = shutil.copytree(vaegan_run, tmp_path / "run")
    train("sora_vaegan", out=str(run), epochs=3, resume=True, verbose=0)
    with open(run / "history.csv") as f:  # epoch 0 was the warm-up, in vae_only/
        assert [int(line.split(",")[0]) for line in f.readlines()[1:]] == [1, 2]
    resumed = keras.saving.load_model(str(run / "last.keras"))
    assert int(resumed.vae_optimizer.iterations.numpy()) > steps
    # A checkpoint of a design before the frame codes: the error names the file.
    last = str(run / "last.keras")
    with zipfile.ZipFile(last) as z:
        files = {n: z.read(n) for n in z.namelist()}
    saved = json.loads(files["config.json"])
    del saved["config"]["config"]["frame_widths"]
    files["config.json"] = json.dumps(saved).encode()
    with zipfile.ZipFile(last, "w") as z:
        for n, data in files.items():
            z.writestr(n, data)
    with pytest.raises(ValueError, match=f"{re.escape(last)}: .*earlier design"):
        train("sora_vaegan", out=str(run), epochs=4, resume=True, verbose=0)


@pytest.mark.slow
def test_generate_writes_decodable_videos_of_the_class(vaegan_run, tmp_path, capsys):
    out = tmp_path / "gen"
    assert cli.main(["generate", "--model", vaegan_run, "--class", "left", "--n", "3", "--out", str(out)]) == 0
    paths = capsys.readouterr().out.split()
    assert len(paths) == 3 and all("/left/" in p for p in paths)
    config = sora_vaegan.Config.tiny()
    for p in paths:
        assert count_frames(p) == config.num_frames
        assert read_frames(p, [0], (config.image_size,) * 2).shape == (1, config.image_size, config.image_size, 3)
    assert not [n for n in os.listdir(out / "left") if n.startswith(".tmp")]
    first, second = (read_frames(p, list(range(config.num_frames)), (config.image_size,) * 2) for p in paths[:2])
    assert not np.array_equal(first, second)  # every clip its own prior draw
    assert cli.main(["generate", "--model", vaegan_run, "--class", "nope", "--out", str(out)]) == 2
    assert "not one of the model's classes" in capsys.readouterr().err


@pytest.mark.slow
def test_anomaly_scores_and_auroc(vaegan_run, tiny_data, tmp_path, capsys):
    videos = sorted(os.path.join(tiny_data, "up", n) for n in os.listdir(os.path.join(tiny_data, "up")))[:2]
    missing = str(tmp_path / "missing.mp4")
    assert cli.main(["anomaly", "--model", vaegan_run, *videos, missing]) == 1
    out, err = capsys.readouterr()
    assert out.count("score") == 2 and "missing.mp4: error" in err
    # Scores follow reconstruction error: a clip of noise scores above a clip of the data.
    model = keras.saving.load_model(os.path.join(vaegan_run, "best.keras"))
    config = model.config
    real = read_frames(videos[0], list(range(config.num_frames)), (config.image_size,) * 2)[None]
    noise = _clips(config, 1, seed=1)
    assert anomaly._scores(model, noise)[0]["score"] > anomaly._scores(model, real)[0]["score"]


@pytest.mark.slow
def test_knn_anomaly_aurocs_in_every_embedding(vaegan_run, tiny_data):
    from sora_tf.data.sources import list_clips

    listing = list_clips(tiny_data)
    up, static = listing.classes.index("up"), listing.classes.index("static")
    ups = [i for i, label in enumerate(listing.labels) if label == up]
    normal = listing.subset(ups[:4])
    held = listing.subset(ups[4:] + [i for i, label in enumerate(listing.labels) if label == static])
    is_normal = np.array([label == up for label in held.labels])
    result = anomaly.knn_aurocs(vaegan_run, normal, held, is_normal, k=2)
    assert set(result) == {"k", "normal_collection", "auroc_run", "auroc_histogram", "auroc_pixels"}
    assert all(0.0 <= result[f"auroc_{n}"] <= 1.0 for n in ("run", "histogram", "pixels"))
    # The run's figure is the AUROC of the distance of each held-out clip's z_mean (the eval
    # view the anomaly score sees) to its 2 nearest normal clips' z_mean.
    from sora_tf.embedding.store import normalised
    from sora_tf.embedding.uses import knn_scores
    model = keras.saving.load_model(os.path.join(vaegan_run, "best.keras"))
    (a, _), (b, _) = load_clips(normal, model.config), load_clips(held, model.config)
    scores = knn_scores(normalised(model.embed(a)), normalised(model.embed(b)), k=2)
    assert result["auroc_run"] == pytest.approx(anomaly.auroc(scores[is_normal], scores[~is_normal]), abs=1e-6)


@pytest.mark.slow
def test_export_signatures_and_tflite_parity(vaegan_run, tmp_path, capsys):
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    from sora_tf.export import tflite
    from sora_tf.export.exporter import export_run

    result = export_run(vaegan_run, str(tmp_path / "export"), calibration_clips=8, parity_clips=4)
    model = keras.saving.load_model(os.path.join(vaegan_run, "best.keras"))
    config = model.config
    loaded = tf.saved_model.load(result["saved_model"])
    assert {"encode", "embed", "decode", "generate", "reconstruct", "anomaly_score"} <= set(loaded.signatures)
    clips = _clips(config, 2)
    big = np.repeat(np.repeat(clips, 2, axis=2), 2, axis=3)  # any frame size is resized inside
    z = loaded.signatures["encode"](frames=tf.constant(clips))["z_mean"].numpy()
    np.testing.assert_allclose(z, np.asarray(model.encoder(clips)["z_mean"]), atol=1e-4)
    np.testing.assert_array_equal(loaded.signatures["embed"](frames=tf.constant(clips))["embedding"].numpy(), z)
    assert loaded.signatures["encode"](frames=tf.constant(big))["z_mean"].shape == z.shape
    frames = loaded.signatures["decode"](z=tf.constant(z), class_id=tf.constant([0, 1]))["frames"]
    assert frames.dtype == tf.uint8 and frames.shape == clips.shape
    seed = tf.constant([[1, 2], [1, 2]])
    gen = loaded.signatures["generate"](class_id=tf.constant([3, 3]), seed=seed)["frames"].numpy()
    np.testing.assert_array_equal(gen[0], gen[1])  # same seed, same class: same clip
    # ... drawn from the prior the run fitted (not N(0, I)), as in Keras.
    assert not np.all(model.prior_scale.numpy() == 1.0)
    noise = tf.random.stateless_normal(config.noise_shape, [1, 2])[None]
    want = model.decoder(model.decoder_inputs(model.latent_from_noise(noise, np.array([3])), np.array([3])))
    assert np.abs(gen[0].astype(int) - np.round(np.asarray(want[0]) * 255)).max() <= 1
    scores = loaded.signatures["anomaly_score"](frames=tf.constant(clips))
    want = anomaly._scores(model, clips)
    for key in ("score", "temporal"):
        np.testing.assert_allclose(scores[key].numpy(), [w[key] for w in want], rtol=1e-4)
    # Every TFLite file: builtins only, in LiteRT, and close to Keras (recorded in parity.json).
    for key, path in result["tflite"].items():
        assert not tflite.flex_ops(path)
        Interpreter(model_path=path).get_signature_runner()
    parity = {p["artifact"]: p for p in result["parity"]}  # (float32 parity: the shared harness)
    assert parity["tflite_decoder_int8"]["psnr_vs_keras_db"] > 30
    # generate from the export, as from the run
    assert cli.main(["generate", "--model", os.path.dirname(result["saved_model"]), "--n", "1",
                     "--out", str(tmp_path / "gen")]) == 0
    assert len(capsys.readouterr().out.split()) == config.num_classes


@pytest.mark.slow
def test_sora_cls_frame_cnn_from_vaegan_encoder(vaegan_run, tiny_data, tmp_path):
    from sora_tf.models import sora_cls
    from sora_tf.train.classify import init_frame_cnn

    encoder_cnn = keras.saving.load_model(os.path.join(vaegan_run, "best.keras")).encoder \
        .get_layer("frame_features").layer
    config = sora_cls.Config.tiny()  # widths (8, 16, 16): the tiny encoder's (8, 16) stages match
    core = sora_cls.build(config)
    assert init_frame_cnn(core, vaegan_run) == ["conv0", "bn0", "conv1", "bn1"]
    cnn = core.get_layer("frame_features").layer
    for name in ("conv0", "bn1"):
        for a, b in zip(cnn.get_layer(name).get_weights(), encoder_cnn.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)
    wider = sora_cls.build(dataclasses.replace(config, normal_flow=True))  # frame, difference, normal flow
    assert init_frame_cnn(wider, vaegan_run) == ["conv0", "bn0", "conv1", "bn1"]
    kernel = wider.get_layer("frame_features").layer.get_layer("conv0").get_weights()[0]
    np.testing.assert_array_equal(kernel[:, :, :6], encoder_cnn.get_layer("conv0").get_weights()[0])
    assert np.abs(kernel[:, :, 6:]).sum() > 0  # the flow's two channels keep their initial weights
    with pytest.raises(ValueError, match="not a run with an encoder"):
        init_frame_cnn(core, os.path.join(vaegan_run, "judge"))


@pytest.mark.slow
def test_default_config_gan_steps_on_generated_video_are_finite(tiny_data):
    """The default architecture and loss weights, adversarial from step one (no warm-up), on
    decoded generated clips at the default 64 px: every logged term stays finite."""
    from sora_tf.data.sources import list_clips
    from sora_tf.runs import load_clips

    config = sora_vaegan.Config()
    clips, labels = load_clips(list_clips(tiny_data), config, limit=32)
    model = sora_vaegan.build(config)
    model.compile()
    logs = model.fit(clips, labels, batch_size=16, epochs=2, verbose=0).history
    assert all(np.isfinite(v).all() for v in logs.values())
    assert logs["d_loss"][-1] > 0
