"""A probe, not part of the package: recompute the frame CNN's BatchNorm statistics of each
finished fold run of a fight_surv `cv` over its training clips (eval sampling), and score the
test clips before and after. `python docs/probes/bn_recalibration.py CV_DIR` (docs/sora_cls.md)."""
import csv
import json
import sys

import keras
import numpy as np
from sklearn.metrics import roc_auc_score

import sora_tf.models.sora_cls  # noqa: F401 (registers SoraCls for load_model)
from sora_tf.data.sources import list_clips
from sora_tf.data.video import read_frames

cvdir = sys.argv[1]


def clips(rows):
    out = []
    for r in rows:
        n = int(r["n"])
        out.append(read_frames(r["path"], np.round(np.linspace(0, n - 1, 16)).astype(int), (64, 64)))
    return np.stack(out).astype("float32")


listing = list_clips(json.load(open(f"{cvdir}/cv_plan.json"))["data"])
count = dict(zip(listing.paths, listing.counts))
P0 = []; P1 = []; Y = []; acc0 = []; acc1 = []
for k in range(5):
    m = keras.models.load_model(f"{cvdir}/fold{k}/best.keras", compile=False)
    classes = json.load(open(f"{cvdir}/fold{k}/classes.json"))
    rows = list(csv.DictReader(open(f"{cvdir}/fold{k}.csv")))
    for r in rows: r["n"] = count[r["path"]]
    train = clips([r for r in rows if r["split"] == "train"])
    test_rows = [r for r in rows if r["split"] == "test"]; test = clips(test_rows)
    y = np.array([classes.index(r["label"]) for r in test_rows])
    p0 = m.predict(test, batch_size=16, verbose=0)["probabilities"]
    cnn = m.get_layer("frame_features")
    sub = [v for v in vars(cnn).values() if isinstance(v, keras.Model)][0]
    pre = keras.Model(m.input, m.get_layer("frame_diff").output)
    frames = np.concatenate([pre(train[i:i + 8]).numpy().reshape(-1, 64, 64, 6) for i in range(0, len(train), 8)])
    for name in ("bn0", "bn1", "bn2", "bn3"):
        upto = keras.Model(sub.input, sub.get_layer(name).input)
        acts = np.concatenate([upto(frames[i:i + 512]).numpy() for i in range(0, len(frames), 512)])
        bn = sub.get_layer(name)
        bn.moving_mean.assign(acts.mean((0, 1, 2))); bn.moving_variance.assign(acts.var((0, 1, 2)))
    p1 = m.predict(test, batch_size=16, verbose=0)["probabilities"]
    acc0.append((p0.argmax(1) == y).mean()); acc1.append((p1.argmax(1) == y).mean())
    P0 += list(p0[:, 0]); P1 += list(p1[:, 0]); Y += list(y == 0)
    print(k, "stored %.3f recalibrated %.3f" % (acc0[-1], acc1[-1]), flush=True)
print("stored BN stats: accuracy %.3f AUROC %.3f; recalibrated: accuracy %.3f AUROC %.3f" % (
    np.mean(acc0), roc_auc_score(Y, P0), np.mean(acc1), roc_auc_score(Y, P1)))
