"""A probe, not part of the package: the motion statistics of `sora_tf.data.motion` (what
`cv --baseline` fits) over other frame selections, sizes and motion (flow or frame differences),
with a logistic regression scored on the folds of a `cv` run (docs/sora_cls.md, "Fourth study").

    python docs/probes/motion_stats.py CV_DIR [--mode flow|diff] [--step 3] [--width 160]
        [--cnn CV_DIR ...]

CV_DIR is the output of `python -m sora_tf cv` (its foldK.csv name every clip's split). --step
keeps every step-th decoded frame (3: about 8 fps, as sora_cls samples 16 frames over 2 s);
--width is the grey frame's width in pixels. --cnn averages the p_fight of those cv runs
(cv_predictions.csv) with the regression's, to see whether the two err on the same clips.
"""
import argparse
import csv
import os
from concurrent.futures import ProcessPoolExecutor

import cv2
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sora_tf.data.motion import statistics
from sora_tf.train.cv import ranking


def motion(path, mode, step, width):
    """[T-1, H, W, 2] motion between kept frames: Farneback flow in pixels per 1/25 s at 160 px
    width, or the grey-level difference / 8 as the first channel (no direction)."""
    cap = cv2.VideoCapture(path)
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    previous, out, index = None, [], -1
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        index += 1
        if index % step:
            continue
        h, w = frame.shape[:2]
        grey = cv2.cvtColor(cv2.resize(frame, (width, max(2, round(h * width / w)))), cv2.COLOR_BGR2GRAY)
        if previous is not None:
            if mode == "flow":
                flow = cv2.calcOpticalFlowFarneback(previous, grey, None, 0.5, 3, max(3, 15 * width // 160), 3, 5, 1.2, 0)
                out.append(flow * (25.0 / fps / step) * (160.0 / width))
            else:
                d = (grey.astype(np.float32) - previous.astype(np.float32)) / 8.0
                out.append(np.stack([d, np.zeros_like(d)], -1))
        previous = grey
    if len(out) < 2:
        raise ValueError(f"{path}: fewer than 3 frames kept")
    return np.stack(out).astype(np.float32)


def clip_statistics(path, mode="flow", step=3, width=160):
    return statistics(motion(path, mode, step, width))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("cv_dir")
    parser.add_argument("--mode", choices=("flow", "diff"), default="flow")
    parser.add_argument("--step", type=int, default=3)
    parser.add_argument("--width", type=int, default=160)
    parser.add_argument("--cnn", nargs="*", default=[])
    args = parser.parse_args()
    folds = sorted(f for f in os.listdir(args.cv_dir) if f.startswith("fold") and f.endswith(".csv"))
    rows = [list(csv.DictReader(open(os.path.join(args.cv_dir, f)))) for f in folds]
    paths = sorted({r["path"] for fold in rows for r in fold})
    with ProcessPoolExecutor(2) as pool:
        x = dict(zip(paths, pool.map(clip_statistics, paths, *zip(*[(args.mode, args.step, args.width)] * len(paths)))))
    cnn = {}
    for d in args.cnn:
        for r in csv.DictReader(open(os.path.join(d, "cv_predictions.csv"))):
            cnn.setdefault(r["path"], []).append(float(r["p_fight"]))
    p, q, y, g, acc = [], [], [], [], []
    for fold in rows:
        train = [r for r in fold if r["split"] != "test"]
        test = [r for r in fold if r["split"] == "test"]
        model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
        model.fit(np.stack([x[r["path"]] for r in train]), [r["label"] == "fight" for r in train])
        pf = model.predict_proba(np.stack([x[r["path"]] for r in test]))[:, 1]
        yf = np.array([r["label"] == "fight" for r in test])
        acc.append(((pf > 0.5) == yf).mean())
        p += list(pf); y += list(yf); g += [r["group"] for r in test]
        q += [np.mean(cnn[r["path"]]) for r in test] if cnn else []
    p, y, g = np.array(p), np.array(y), np.array(g)
    ranked = ranking(y, p, g, "p_fight")
    print(f"{args.mode}, every {args.step} frame(s), {args.width} px: accuracy {np.mean(acc):.3f} ± {np.std(acc):.3f}"
          f" (folds {' '.join(f'{a:.2f}' for a in acc)}), ROC AUC {ranked['auroc']:.3f},"
          f" within a source {ranked['within_source_auroc']:.3f}")
    if cnn:
        q = np.array(q)
        both = (p + q) / 2
        print(f"the cv runs' p_fight: accuracy {((q > 0.5) == y).mean():.3f}, ROC AUC {roc_auc_score(y, q):.3f};"
              f" averaged with the regression: accuracy {((both > 0.5) == y).mean():.3f}, ROC AUC {roc_auc_score(y, both):.3f}")


if __name__ == "__main__":
    main()
