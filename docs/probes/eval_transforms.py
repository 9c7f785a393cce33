"""A probe, not part of the package: a finished run's test accuracy (one view) when its test
clips are first resampled the way training's warp resamples clips: a centre crop, a sub-pixel
shift, a Gaussian blur (docs/sora_cls.md, "Seventh study"). A run that only ever trained on
warped clips reads higher on slightly smoothed clips than on the clips as decoded.

    python docs/probes/eval_transforms.py RUN
"""
import argparse

import cv2
import numpy as np
import tensorflow as tf

from sora_tf.runs import load_clips, load_run, source_listing, split_part


def resampled(clips, box):
    """clips [N, T, S, S, 3] with every frame bilinearly resampled from `box` (y0, x0, y1, x1,
    in units of the side) back to S x S."""
    n, t, h, w, c = clips.shape
    frames = tf.reshape(tf.cast(clips, tf.float32), [-1, h, w, c])
    out = tf.image.crop_and_resize(frames, tf.tile([box], [n * t, 1]), tf.range(n * t), [h, w])
    return tf.reshape(out, clips.shape).numpy()


def blurred(clips, sigma):
    return np.stack([[cv2.GaussianBlur(f.astype(np.float32), (0, 0), sigma) for f in clip] for clip in clips])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("run")
    args = p.parse_args()
    model, config, classes, info = load_run(args.run)
    clips, labels = load_clips(split_part(args.run, source_listing(classes, info), "test", info["data"]), config)
    side = config.image_size
    transforms = {
        "as decoded": lambda x: x,
        "centre crop 0.95": lambda x: resampled(x, [0.025, 0.025, 0.975, 0.975]),
        "centre crop 0.90": lambda x: resampled(x, [0.05, 0.05, 0.95, 0.95]),
        "shift 0.25 px": lambda x: resampled(x, [0.25 / side, 0.25 / side, 1 + 0.25 / side, 1 + 0.25 / side]),
        "shift 0.5 px": lambda x: resampled(x, [0.5 / side, 0.5 / side, 1 + 0.5 / side, 1 + 0.5 / side]),
        "blur sigma 0.5 px": lambda x: blurred(x, 0.5),
        "blur sigma 0.8 px": lambda x: blurred(x, 0.8),
    }
    print(f"{len(labels)} test clips; accuracy, then recall per class ({', '.join(classes)})")
    for name, transform in transforms.items():
        predicted = np.asarray(model.predict(transform(clips), batch_size=32, verbose=0)["probabilities"]).argmax(1)
        recall = [(predicted[labels == k] == k).mean() for k in range(len(classes))]
        print(f"{name:>18}: {(predicted == labels).mean():.4f}  " + " ".join(f"{r:.3f}" for r in recall))


if __name__ == "__main__":
    main()
