"""Write a CSV manifest (path, label, split) for a few-labels experiment, optionally with generated clips.

It keeps a run's validation clips as they are (split=val) and `--fraction` of its training
clips per class (split=train), and can add every clip of a `generate` output folder to training:

    python datasets/labelled_fraction.py --run runs/A --fraction 0.1 --out runs/few.csv
    python -m sora_tf train --model sora_vaegan --data runs/few.csv        # generator on the 10%
    python -m sora_tf generate --model runs/<vaegan run> --n 40 --out runs/gen
    python datasets/labelled_fraction.py --run runs/A --fraction 0.1 --generated runs/gen --out runs/few+gen.csv
    python -m sora_tf train --model sora_cls --data runs/few.csv            # vs --data runs/few+gen.csv

Both manifests share the same validation clips, so the two sora_cls runs are compared on them.
"""
import argparse
import csv
import json
import os
import random

from sora_tf.data.sources import list_clips


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="a run whose data and split.json to start from")
    ap.add_argument("--fraction", type=float, required=True, help="share of each class's training clips")
    ap.add_argument("--generated", help="a `generate` output folder (<class>/*.mp4) to add to training")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    with open(os.path.join(args.run, "run.json")) as f:
        data = json.load(f)["data"]
    with open(os.path.join(args.run, "split.json")) as f:
        split = json.load(f)
    listing = list_clips(data)
    rng = random.Random(args.seed)
    rows = []
    for k, name in enumerate(listing.classes):
        train = [i for i in split["train"] if listing.labels[i] == k]
        rows += [(listing.paths[i], name, "train") for i in sorted(rng.sample(train, max(1, round(args.fraction * len(train)))))]
    for part in ("val", "test"):  # the run's own held-out clips, as they were (runs before test parts: none)
        rows += [(listing.paths[i], listing.classes[listing.labels[i]], part) for i in split.get(part, [])]
    if args.generated:
        extra = list_clips(args.generated)
        unknown = set(extra.classes) - set(listing.classes)
        if unknown:
            raise SystemExit(f"{args.generated}: classes {sorted(unknown)} are not in {data}")
        rows += [(p, extra.classes[label], "train") for p, label in zip(extra.paths, extra.labels)]
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", newline="") as f:
        csv.writer(f).writerows([("path", "label", "split"), *rows])
    counts = {s: sum(r[2] == s for r in rows) for s in ("train", "val", "test")}
    print(f"{args.out}: {counts['train']} train clips ({args.fraction:.0%} of the run's per class"
          f"{', plus generated' if args.generated else ''}), {counts['val']} val clips, {counts['test']} test clips")


if __name__ == "__main__":
    main()
