"""A probe, not part of the package: the motion recipe's statistics (`sora_tf.models.flow`, TF
ops) against the baseline's (Farneback, `sora_tf.data.motion`), each in the baseline's logistic
regression over six grouped 5-fold deals of a class-per-folder dataset (docs/sora_cls.md,
"Fifth study").

    python docs/probes/flow_statistics.py DATA [--size 64] [--window 9] [--levels 2]
        [--iterations 2] [--farneback] [--directions] [--clips N] [--without-val]

16 frames spread over each video, as sora_cls samples them, squashed to size x size as its
pipeline resizes them (INTER_AREA). The 28 numbers of the baseline; --directions adds the recipe's
8 direction shares; --clips N takes N clips at random (seed 0); --without-val fits each fold's
training clips only, as a run that keeps its validation clips out of training does.
"""
import argparse
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import tensorflow as tf

from sora_tf.data import motion
from sora_tf.data.sources import list_clips
from sora_tf.data.video import read_frames
from sora_tf.models import flow
from sora_tf.train import cv


def main():
    p = argparse.ArgumentParser()
    p.add_argument("data")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--window", type=int, default=9)
    p.add_argument("--levels", type=int, default=2)
    p.add_argument("--iterations", type=int, default=2)
    p.add_argument("--farneback", action="store_true", help="the baseline's flow instead, at the same size")
    p.add_argument("--directions", action="store_true", help="with the 8 direction shares (recipe flow only)")
    p.add_argument("--clips", type=int, default=0)
    p.add_argument("--without-val", action="store_true", help="fit the training clips only, not the validation clips")
    args = p.parse_args()
    listing = list_clips(args.data)
    if args.clips:
        listing = listing.subset(sorted(np.random.default_rng(0).permutation(len(listing.paths))[:args.clips]))

    def frames(i):
        n = listing.counts[i]
        return read_frames(listing.paths[i], np.round(np.linspace(0, n - 1, min(16, n))).astype(np.int64),
                           (args.size, args.size))
    with ThreadPoolExecutor(2) as pool:
        clips = list(pool.map(frames, range(len(listing.paths))))
    if args.farneback:
        motion.MOVING = flow.MOVING * args.size  # the same threshold in pixels at this width
        stats = [motion.statistics(motion.flows(c)) for c in clips]
    else:
        fn = tf.function(lambda x: flow.clip_statistics(x, args.size, args.window, args.levels, args.iterations))
        keep = flow.NUM_STATS if args.directions else 28
        stats = [fn(tf.constant(c[None], tf.float32)).numpy()[0, :keep].astype(np.float64) for c in clips]
    cached = dict(zip(listing.paths, stats))
    motion.clip_statistics = lambda path, count=None: cached[path]  # what motion_baseline calls
    accuracy, auroc = [], []
    for seed in range(6):
        parts = cv.fold_parts(listing, 5, 0.2, seed)
        if args.without_val:
            parts = [(train, [], test) for train, val, test in parts]
        result = cv.motion_baseline(listing, parts)
        accuracy.append(result["summary"]["test_accuracy"]["mean"])
        auroc.append(result.get("sources", {}).get("auroc", float("nan")))  # two classes only
        print(f"fold seed {seed}: accuracy {accuracy[-1]:.3f}  ROC AUC {auroc[-1]:.3f}", flush=True)
    print(f"fold seeds 0-5: accuracy {np.mean(accuracy):.3f} ({min(accuracy):.3f}-{max(accuracy):.3f}), "
          f"ROC AUC {np.mean(auroc):.3f} ({min(auroc):.3f}-{max(auroc):.3f})")


if __name__ == "__main__":
    main()
