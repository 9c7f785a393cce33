"""Write a CSV manifest (path, label, group) of some classes of a dataset, keeping its groups.

For a model of normal video only (anomaly scores), or a smaller labelled subset:

    python datasets/subset_manifest.py ../shared/data/fight_surv noFight --out runs/noFight.csv
    python -m sora_tf train --model sora_vaegan --data runs/noFight.csv --set conditional=false
    python -m sora_tf anomaly --model runs/<that run> --data ../shared/data/fight_surv

`--fraction 0.1` keeps that share of every class's clips (whole groups where the data has them,
chosen with `--seed`), for example for a 10%-labels experiment.
"""
import argparse
import csv
import os
import random

from sora_tf.data.sources import list_clips


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", help="class-per-folder directory or CSV manifest")
    ap.add_argument("classes", nargs="*", help="classes to keep (default: all)")
    ap.add_argument("--out", required=True, help="CSV file to write")
    ap.add_argument("--fraction", type=float, default=1.0, help="share of each class's clips (or groups) to keep")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    listing = list_clips(args.data)
    unknown = set(args.classes) - set(listing.classes)
    if unknown:
        raise SystemExit(f"{args.data}: no class {sorted(unknown)}; it has {listing.classes}")
    keep_classes = set(args.classes or listing.classes)
    groups = listing.groups or [f"clip:{p}" for p in listing.paths]
    rng = random.Random(args.seed)
    rows = []
    for k, name in enumerate(listing.classes):
        if name not in keep_classes:
            continue
        members = sorted({g for g, label in zip(groups, listing.labels) if label == k})
        chosen = set(rng.sample(members, max(1, round(args.fraction * len(members)))))
        rows += [(os.path.abspath(p), name, g) for p, label, g in zip(listing.paths, listing.labels, groups)
                 if label == k and g in chosen]
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", newline="") as f:
        csv.writer(f).writerows([("path", "label", "group"), *rows])
    print(f"{args.out}: {len(rows)} clips of {sorted(keep_classes)}")


if __name__ == "__main__":
    main()
