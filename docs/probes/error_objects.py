"""A probe, not part of the package: for a finished run on the generated default data, how big
and how visible the moving object is in the test clips it got right and in those it got wrong
(docs/sora_cls.md, "Eighth study"). Each test clip is rendered again from its seed, once as
written and once without the object; where the two differ by more than 8 grey levels is the
object as seen. Its smallest and largest area over the clip (pixels at the data's 96 px) and
its mean contrast there are compared, per class and outcome, and zoom in against zoom out.

    python docs/probes/error_objects.py RUN/predictions_test.csv [--classes zoom rotate]
"""
import argparse
import csv
import os

import numpy as np

from sora_tf.data import synthetic


def object_view(cls, index, seed=0):
    """(area per frame [T], mean contrast) of the object of clip `index` of class `cls`."""
    spec, label = synthetic.VARIANTS["default"], synthetic.CLASSES.index(cls)
    written = synthetic.render_clip(cls, spec, np.random.default_rng([seed, label, index]))
    paste = synthetic._paste

    def distractors_only(canvas, tex, mask, cx, cy, scale, angle):
        if (scale, angle) == (1.0, 0.0):  # distractors are pasted as they are; the object never is
            paste(canvas, tex, mask, cx, cy, scale, angle)

    synthetic._paste = distractors_only
    try:
        bare = synthetic.render_clip(cls, spec, np.random.default_rng([seed, label, index]))
    finally:
        synthetic._paste = paste
    seen = np.abs(written.astype(np.float32) - bare).mean(-1)
    mask = seen > 8
    return mask.sum((1, 2)), float(seen[mask].mean()) if mask.any() else 0.0


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("predictions")
    parser.add_argument("--classes", nargs="+", default=["zoom", "rotate"])
    args = parser.parse_args()
    rows = [r for r in csv.DictReader(open(args.predictions)) if r["label"] in args.classes]
    found = []
    for r in rows:
        index = int(os.path.splitext(os.path.basename(r["path"]))[0].rsplit("_", 1)[1])
        area, contrast = object_view(r["label"], index)
        found.append((r["label"], r["predicted"] == r["label"], area.min(), area.max(), contrast, area[-1] > area[0]))
    print("class   outcome clips  area min / max (median px)  contrast (median)")
    for cls in args.classes:
        for right in (True, False):
            part = np.array([f[2:] for f in found if f[0] == cls and f[1] == right], dtype=np.float64)
            if len(part):
                print(f"{cls:7s} {'right' if right else 'wrong':7s} {len(part):5d}  {np.median(part[:, 0]):8.0f} / "
                      f"{np.median(part[:, 1]):<8.0f}          {np.median(part[:, 2]):6.1f}")
        for grows in (True, False):
            part = [f for f in found if f[0] == cls and f[5] == grows]
            print(f"{cls:7s} {'growing' if grows else 'not growing'}: {sum(f[1] for f in part)} of {len(part)} right")


if __name__ == "__main__":
    main()
