"""Evaluation of a generative run: measured quality and pictures.

`evaluate_generative` writes metrics.json and PNG/mp4 pictures for a run and its `vae_only/`
twin, judged by a classifier trained on the same data (`judge/`, or the config's `judge_run`):
- reconstruction of held-out clips: MSE, PSNR and SSIM per frame, averaged;
- sharpness: mean image-gradient magnitude of reconstructions and samples over that of real clips;
- `frechet_distance`: between real held-out clips and samples (from the prior the run fitted to
  its training clips), in the judge's embedding space. A Frechet Video Distance analogue: FVD
  uses a pretrained I3D, which is not available here, so the numbers compare runs on the same
  judge only, not with published FVDs. `frechet_distance_standard_normal`: the same for the
  decoder on N(0, I) draws;
- `sample_accuracy`: how often the judge calls a class-conditional sample its intended class,
  and `reconstruction.judge_accuracy`, how often it calls a reconstruction the true class.
"""
import logging
import os

import cv2
import keras
import numpy as np
import tensorflow as tf

from sora_tf.atomic import atomic_write, save_json, save_text
from sora_tf.data.video import write_clip_video
from sora_tf.models.blocks import to_uint8
from sora_tf.runs import load_clips, load_run, run_listing
from sora_tf.train.metrics import classification_metrics

log = logging.getLogger("sora_tf.train")


def _batched(fn, *arrays, batch=16):
    outs = [fn(*(a[i:i + batch] for a in arrays)) for i in range(0, len(arrays[0]), batch)]
    return np.concatenate([np.asarray(o) for o in outs])


def frechet_distance(a, b):
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^1/2) between two sets of row vectors.

    Tr((S_a S_b)^1/2) is the sum of square roots of the eigenvalues of S_a^1/2 S_b S_a^1/2,
    which is symmetric, so numpy's eigh suffices (no scipy).
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    mu = a.mean(0) - b.mean(0)
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(sa)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ sb @ root_a), 0, None)).sum()
    return float(mu @ mu + np.trace(sa) + np.trace(sb) - 2 * cross)


def real_halves_distance(embedding):
    """The Frechet distance between two halves of the real clips' embeddings: what "as close as
    real" looks like. The halves alternate clips, so that both hold every class alike (a
    listing is in class order; its first and second half held different classes and read ~20
    on the default data, where alternate halves read ~0.5)."""
    return frechet_distance(embedding[0::2], embedding[1::2])


def sharpness(frames):
    """Mean absolute image gradient of [N, T, H, W, 3] frames in [0, 1]."""
    x = np.asarray(frames, np.float32)
    return float(np.mean(np.abs(np.diff(x, axis=2))) + np.mean(np.abs(np.diff(x, axis=3)))) / 2


def frame_quality(real, fake):
    """Per-frame MSE, PSNR (dB) and SSIM of [N, T, H, W, 3] in [0, 1], averaged over frames."""
    r = tf.reshape(tf.constant(real, tf.float32), (-1, *real.shape[2:]))
    f = tf.reshape(tf.constant(fake, tf.float32), (-1, *fake.shape[2:]))
    mse = tf.reduce_mean(tf.square(r - f), axis=(1, 2, 3))
    return {"mse": float(tf.reduce_mean(mse)),
            "psnr": float(tf.reduce_mean(tf.image.psnr(r, f, max_val=1.0))),
            "ssim": float(tf.reduce_mean(tf.image.ssim(r, f, max_val=1.0)))}


def load_judge(run_dir, config):
    """The classifier that judges samples: the config's judge_run, else the run's judge/."""
    path = config.judge_run or os.path.join(run_dir, "judge")
    judge, judge_config, judge_classes, _ = load_run(path)
    if (judge_config.num_frames, judge_config.image_size) != (config.num_frames, config.image_size):
        raise ValueError(f"judge {path} takes {judge_config.num_frames} frames of {judge_config.image_size} px; "
                         f"the run makes {config.num_frames} of {config.image_size}")
    return judge, judge_classes, path


def _judge(judge, clips_uint8):
    out = [judge(clips_uint8[i:i + 16], training=False) for i in range(0, len(clips_uint8), 16)]
    return (np.concatenate([np.asarray(o["embedding"]) for o in out]),
            np.concatenate([np.asarray(o["probabilities"]) for o in out]))


def judged(probs, labels, classes):
    """(accuracy, {class name: share of its clips the judge names right} for classes with clips,
    the judge's confusion matrix), from `classification_metrics`."""
    m = classification_metrics(labels, probs, classes)
    return (m["accuracy"], {c: v["recall"] for c, v in m["per_class"].items() if v["support"]},
            m["confusion_matrix"])


def _measure(model, clips, labels, judge, real_embedding, real_sharp, seed, classes, per_class):
    """Reconstruction, sample and judge figures of one generative model, from `per_class`
    samples of each class (the run's `samples_per_class`, for its twin too: a Frechet distance
    from fewer samples reads higher)."""
    config = model.config
    conditional = config.conditional
    rec = _batched(lambda c, l: model.reconstruct(c, l if conditional else None), clips, labels)
    result = {"reconstruction": frame_quality(clips / 255.0, rec)}
    result["reconstruction"]["sharpness_vs_real"] = sharpness(rec) / real_sharp
    sample_labels = np.repeat(np.arange(config.num_classes), per_class)
    seeds = keras.random.SeedGenerator(seed)  # advances every batch: no batch repeats another
    gen = _batched(lambda l: model.sample(l, seed=seeds), sample_labels)
    emb, probs = _judge(judge, to_uint8(gen))
    # The same decoder on N(0, I) draws, the prior it was trained with before `fit_prior`.
    plain = _batched(lambda l: model.decoder(model.decoder_inputs(
        keras.random.normal((len(l), *config.latent_shape), seed=seeds), l), training=False), sample_labels)
    plain_emb = _judge(judge, to_uint8(plain))[0]
    rec_emb, rec_probs = _judge(judge, to_uint8(rec))
    # Does the judge still see the class in a reconstruction? Where the decoder drops the motion,
    # samples it draws from the prior cannot show a class either.
    (result["reconstruction"]["judge_accuracy"],
     result["reconstruction"]["judge_accuracy_per_class"], _) = judged(rec_probs, labels, classes)
    result["samples"] = {
        "num_samples": int(len(gen)),
        "frechet_distance": frechet_distance(real_embedding, emb),
        "frechet_distance_standard_normal": frechet_distance(real_embedding, plain_emb),
        "sharpness_vs_real": sharpness(gen) / real_sharp,
    }
    if conditional:
        # judge_confusion: which class the judge calls each class's samples, rows the intended class
        (result["samples"]["sample_accuracy"], result["samples"]["sample_accuracy_per_class"],
         result["samples"]["judge_confusion"]) = judged(probs, sample_labels, classes)
    result["reconstruction"]["frechet_distance"] = frechet_distance(real_embedding, rec_emb)
    return result, rec, gen, sample_labels


def grid(rows):
    """A PNG-ready uint8 mosaic: each row a list of [T, H, W, 3] clips laid out frame by frame."""
    pad = 2
    lines = []
    for clips in rows:
        frames = [f for clip in clips for f in clip]
        h, w = frames[0].shape[:2]
        line = np.full((h + pad, len(frames) * (w + pad), 3), 255, np.uint8)
        for i, f in enumerate(frames):
            line[:h, i * (w + pad):i * (w + pad) + w] = f
        lines.append(line)
    return np.concatenate(lines)


def write_png(path, rgb, scale=2):
    image = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)

    def write(tmp):  # tmp ends with the target's name, so ".png" tells OpenCV the format
        if not cv2.imwrite(tmp, cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
            raise OSError(f"{path}: could not write PNG")
    atomic_write(path, write)
    return path


def interpolate(model, clips, labels, steps=8):
    """Clips decoded along the line between the latents (and classes) of clips[0] and clips[1]."""
    q = model.encoder(clips[:2], training=False)
    z = np.asarray(q["z_mean"])
    w = np.linspace(0, 1, steps, dtype=np.float32)[:, None]
    inputs = {"z": (1 - w) * z[0] + w * z[1]}
    if model.config.conditional:
        onehot = np.eye(model.config.num_classes, dtype=np.float32)[labels[:2]]
        inputs["class"] = (1 - w) * onehot[0] + w * onehot[1]
    return np.asarray(to_uint8(model.decoder(inputs, training=False)))


def _pictures(run_dir, model, clips, labels, rec, gen, gen_labels, classes):
    paths = {}
    show = np.linspace(0, len(clips) - 1, min(6, len(clips))).round().astype(int)
    paths["reconstructions"] = write_png(os.path.join(run_dir, "reconstructions.png"),
                                         grid([row for j in show for row in ([clips[j]], [to_uint8(rec[j])])]))
    per_class = min(3, model.config.samples_per_class)
    rows = [[to_uint8(gen[i])] for k in range(model.config.num_classes)
            for i in np.flatnonzero(gen_labels == k)[:per_class]]
    paths["samples"] = write_png(os.path.join(run_dir, "samples.png"), grid(rows))
    legend = "rows of samples.png, top to bottom: " + ", ".join(
        f"{classes[k]} x{per_class}" for k in range(model.config.num_classes)) + "\n"

    save_text(os.path.join(run_dir, "samples.txt"), legend)
    # Two clips of different classes where there are.
    first = 0
    other = next((i for i in range(len(labels)) if labels[i] != labels[first]), min(1, len(labels) - 1))
    pair = np.stack([clips[first], clips[other]])
    interp = interpolate(model, pair, np.array([labels[first], labels[other]]))
    paths["interpolation"] = write_png(os.path.join(run_dir, "interpolation.png"), grid([[c] for c in interp]))
    paths["interpolation_video"] = write_clip_video(os.path.join(run_dir, "interpolation.mp4"),
                                                    interp.reshape(-1, *interp.shape[2:]))
    return paths


def evaluate_generative(run_dir, data=None, strict=False, seed=0):
    """metrics.json and pictures for a generative run (and its vae_only/ twin, when present)."""
    model, config, classes, info = load_run(run_dir)
    judge, judge_classes, judge_path = load_judge(run_dir, config)
    if judge_classes != classes:
        raise ValueError(f"judge {judge_path} has classes {judge_classes}, the run has {classes}")
    listing = run_listing(run_dir, classes, info, data, strict=strict)
    clips, labels = load_clips(listing, config)
    real_embedding, real_probs = _judge(judge, clips)
    real_sharp = sharpness(clips / 255.0)
    accuracy, per_class, _ = judged(real_probs, labels, classes)
    metrics = {"split": "validation" if data is None else os.path.abspath(data), "num_clips": int(len(clips)),
               "judge": {"run": os.path.abspath(judge_path), "accuracy_on_real": accuracy,
                         "accuracy_on_real_per_class": per_class}}
    metrics["judge"]["frechet_distance_real_halves"] = real_halves_distance(real_embedding)
    metrics["vaegan" if config.gan else "vae"], rec, gen, gen_labels = _measure(
        model, clips, labels, judge, real_embedding, real_sharp, seed, classes, config.samples_per_class)
    twin = os.path.join(run_dir, "vae_only")
    if config.gan and config.compare_vae and os.path.isfile(os.path.join(twin, "best.keras")):
        # (without compare_vae the twin is only the GAN's warm-up, not a comparison)
        metrics["vae_only"] = _measure(load_run(twin)[0], clips, labels, judge, real_embedding, real_sharp, seed,
                                       classes, config.samples_per_class)[0]
        metrics["vaegan_fd_below_vae_only"] = (metrics["vaegan"]["samples"]["frechet_distance"]
                                               < metrics["vae_only"]["samples"]["frechet_distance"])
    metrics["pictures"] = _pictures(run_dir, model, clips, labels, rec, gen, gen_labels, classes)
    history = os.path.join(run_dir, "history.csv")
    if os.path.isfile(history):
        metrics["nan_in_history"] = _history_has_nan(history)
    save_json(os.path.join(run_dir, "metrics.json"), metrics)
    return metrics


def _history_has_nan(path):
    with open(path) as f:
        return any("nan" in line.lower() for line in f.readlines()[1:])


def summary_lines(metrics):
    """Short text for the end of `train`/`evaluate`."""
    lines = [f"judge accuracy on real clips {metrics['judge']['accuracy_on_real']:.3f}"]
    for name in ("vaegan", "vae", "vae_only"):
        if name in metrics:
            r, s = metrics[name]["reconstruction"], metrics[name]["samples"]
            line = (f"{name:8s} PSNR {r['psnr']:.2f} dB  SSIM {r['ssim']:.3f}  FD {s['frechet_distance']:.2f}"
                    f" (N(0, I) draws {s['frechet_distance_standard_normal']:.2f})"
                    f"  sharpness {s['sharpness_vs_real']:.2f}")
            if "sample_accuracy" in s:
                line += f"  sample accuracy {s['sample_accuracy']:.3f}"
            line += f"  judge on reconstructions {r['judge_accuracy']:.3f}"
            lines.append(line)
    lines += [f"{k}: {v}" for k, v in metrics["pictures"].items()]
    return "\n".join(lines)
