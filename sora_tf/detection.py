"""What detection shares between training, export and the `detect` command: detections of a
stream of frames, COCO AP with pycocotools, and tracking with supervision's ByteTrack scored by
motmetrics (MOTA, IDF1). Boxes are x1, y1, x2, y2 pixels.
"""
import contextlib
import io
import warnings

import numpy as np
import tensorflow as tf


# OpenCV's peopledetect sample's settings for the default HOG people detector.
HOG_SETTINGS = {"winStride": (8, 8), "padding": (8, 8), "scale": 1.05}


def hog_people():
    """OpenCV's HOG descriptor with its default people detector (the baseline; OpenCV 4.x)."""
    import cv2

    hog = cv2.HOGDescriptor()
    hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
    return hog


class KerasStream:
    """A detection model's streaming form for frames of `size` (h, w), built and traced once:
    `step(frame)` (RGB [h, w, 3]) -> (boxes [K, 4] in its pixels, scores [K]), carrying the state;
    `run(frames)` from the zero state; `reset()`."""

    def __init__(self, model, size):
        stream = model.stream(batch=1, size=tuple(size))
        self._step = tf.function(lambda inputs: stream(inputs, training=False))
        self.model, self.size = model, tuple(size)
        self.reset()

    def reset(self):
        self.state = self.model.init_states(size=self.size)

    def step(self, frame):
        out = self._step({"frame": tf.constant(frame[None], tf.float32), **self.state})
        self.state = {k: out[k] for k in self.state}
        return out["boxes"][0].numpy(), out["scores"][0].numpy()

    def run(self, frames):
        self.reset()
        return [self.step(frame) for frame in frames]


def stream_detections(model, frames):
    """[(boxes [K, 4], scores [K])] of each frame in `frames` (uint8 [N, H, W, 3] at the model's
    size), fed in order through the model's streaming form from the zero state."""
    return KerasStream(model, frames.shape[1:3]).run(frames)


def _coco(gt, dets):
    """A pycocotools COCOeval, evaluated and accumulated: `gt` [(people [n, 4], ignored [m, 4])]
    and `dets` [(boxes [K, 4], scores [K])] per frame, x1 y1 x2 y2 pixels."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def xywh(b):
        return [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]
    annotations = []
    for i, (people, ignored) in enumerate(gt):
        for b, crowd in [(b, 0) for b in people] + [(b, 1) for b in ignored]:
            annotations.append({"id": len(annotations) + 1, "image_id": i, "category_id": 1, "bbox": xywh(b),
                                "area": float((b[2] - b[0]) * (b[3] - b[1])), "iscrowd": crowd})
    results = [{"image_id": i, "category_id": 1, "bbox": xywh(b), "score": float(s)}
               for i, (boxes, scores) in enumerate(dets) for b, s in zip(boxes, scores) if b[2] > b[0] and b[3] > b[1]]
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = {"images": [{"id": i} for i in range(len(gt))], "annotations": annotations,
                        "categories": [{"id": 1, "name": "person"}]}
        coco.createIndex()
        evaluation = COCOeval(coco, coco.loadRes(results) if results else COCO(), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return evaluation


def best_f1(evaluation):
    """(precision, recall, score threshold) at the best F1 over score thresholds, IoU 0.5, all areas."""
    images = [e for e in evaluation.evalImgs if e is not None and e["aRng"] == evaluation.params.areaRng[0]
              and e["maxDet"] == evaluation.params.maxDets[-1]]
    scores = np.concatenate([e["dtScores"] for e in images]) if images else np.zeros(0)
    matched = np.concatenate([e["dtMatches"][0] > 0 for e in images]) if images else np.zeros(0, bool)
    ignored = np.concatenate([e["dtIgnore"][0] for e in images]) if images else np.zeros(0, bool)
    positives = sum(int(np.sum(~np.asarray(e["gtIgnore"], bool))) for e in images)
    keep = ~ignored.astype(bool)
    order = np.argsort(-scores[keep], kind="stable")
    hits = matched[keep][order]
    if not len(hits) or not positives:
        return 0.0, 0.0, 1.0
    tp, fp = np.cumsum(hits), np.cumsum(~hits)
    precision, recall = tp / (tp + fp), tp / positives
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    k = int(np.argmax(f1))
    return float(precision[k]), float(recall[k]), float(scores[keep][order][k])


def ap_metrics(gt, dets):
    """{"ap50", "ap", "precision", "recall", "f1", "score_threshold", "frames", "boxes"}."""
    evaluation = _coco(gt, dets)
    precision, recall, threshold = best_f1(evaluation)
    return {"ap50": float(max(evaluation.stats[1], 0.0)), "ap": float(max(evaluation.stats[0], 0.0)),
            "precision": precision, "recall": recall,
            "f1": 2 * precision * recall / max(precision + recall, 1e-12), "score_threshold": threshold,
            "frames": len(gt), "boxes": int(sum(len(p) for p, _ in gt))}


def native_gt(sequence, indices):
    """[(people, ignored)] of frames `indices`, in the source's pixels."""
    scale = sequence.box_scale
    return [(sequence.boxes[i] / scale, sequence.ignore[i] / scale) for i in indices]


def model_detections(stream, sequence, indices):
    """A `KerasStream`'s detections over frames `indices` of `sequence`, in the source's pixels."""
    return [(b / sequence.box_scale, s) for b, s in stream.run(sequence.frames[indices])]


class Tracker:
    """ByteTrack from supervision, fed per-frame detections: `update(boxes, scores)` -> (boxes,
    scores, track ids) of the tracks in that frame. Detections below `min_score` are left out
    (ByteTrack's second association uses the low ones above it)."""

    def __init__(self, fps, min_score=0.1):
        import supervision as sv

        self._sv, self.min_score = sv, min_score
        with warnings.catch_warnings():  # deprecated for the `trackers` package, which needs non-headless OpenCV
            warnings.simplefilter("ignore", FutureWarning)
            self.tracker = sv.ByteTrack(frame_rate=max(1, int(round(fps))))

    def update(self, boxes, scores):
        keep = np.asarray(scores) >= self.min_score
        found = self.tracker.update_with_detections(self._sv.Detections(
            xyxy=np.asarray(boxes, np.float32)[keep].reshape(-1, 4), confidence=np.asarray(scores, np.float32)[keep],
            class_id=np.zeros(int(keep.sum()), int)))
        return found.xyxy, found.confidence, found.tracker_id


def track(dets, fps):
    """[(boxes, scores, track ids)] of each frame's (boxes, scores) through one `Tracker`."""
    tracker = Tracker(fps)
    return [tracker.update(boxes, scores) for boxes, scores in dets]


def iou_distances(a, b, min_iou=0.5):
    """1 - IoU between boxes `a` [n, 4] and `b` [m, 4], NaN (no match) below `min_iou`: what
    `motmetrics.distances.iou_matrix` gives, which calls np.asfarray, gone in NumPy 2."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    lo, hi = np.maximum(a[:, None, :2], b[None, :, :2]), np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=-1)
    area = lambda x: np.prod(x[:, 2:] - x[:, :2], axis=-1)
    iou = inter / np.maximum(area(a)[:, None] + area(b)[None, :] - inter, 1e-12)
    return np.where(iou >= min_iou, 1 - iou, np.nan)


def tracking_metrics(sequence, indices, tracked):
    """motmetrics' MOTA, IDF1 and identity switches of `tracked` against the ground truth."""
    import motmetrics as mm

    accumulator = mm.MOTAccumulator(auto_id=True)
    for i, (people, _), (boxes, _, ids) in zip(indices, native_gt(sequence, indices), tracked):
        accumulator.update(sequence.ids[i].tolist(), list(ids), iou_distances(people, np.asarray(boxes).reshape(-1, 4)))
    summary = mm.metrics.create().compute(accumulator, metrics=["mota", "idf1", "num_switches"], name="test")
    row = summary.iloc[0]
    return {"mota": float(row["mota"]), "idf1": float(row["idf1"]), "id_switches": int(row["num_switches"]),
            "tracker": "supervision ByteTrack", "frames": len(indices)}
