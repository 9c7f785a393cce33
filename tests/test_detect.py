"""Detection: MOT data and its errors, the temporal split, targets and augmentation that keep boxes
on their pixels, decoding, the evaluators, training, export and the `detect` command."""
import dataclasses
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from sora_tf.cli import main
from sora_tf.data import synthetic_det
from sora_tf.data.mot import Sequence, load_sequence, read_gt, temporal_split
from sora_tf.detection import ap_metrics, track, tracking_metrics
from sora_tf.models import sora_det
from sora_tf.train.detect import BoxLoss, HeatmapLoss, clip_stream, paste_people, render_targets
from tests.conftest import WITHOUT_SORA_TF, shared


@pytest.fixture(scope="module")
def walkers(tmp_path_factory):
    return synthetic_det.generate(str(tmp_path_factory.mktemp("det") / "walkers"), "tiny")


@pytest.fixture(scope="module")
def det_run(walkers, tmp_path_factory):
    from sora_tf.train.evaluate import evaluate
    from sora_tf.train.run import train

    run = train("sora_det", walkers, str(tmp_path_factory.mktemp("runs") / "det"), preset="tiny", verbose=0,
                sets=["ablation=true"])
    evaluate(run)
    return run


def _gt(tmp_path, text, name="gt.txt"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_gt_rows_ignored_regions_and_clipping(tmp_path):
    rows, clipped = read_gt(_gt(tmp_path, "1,3,10,20,30,40,1,-1,-1,-1\n1,4,90,5,20,30,0,-1,-1,-1\n\n2,3,-5,0,10,10\n"),
                            2, (100, 80))
    assert rows[0] == [(3, 10, 20, 40, 60, False), (4, 90, 5, 100, 35, True)]  # conf 0: ignored region
    assert rows[1] == [(3, 0, 0, 5, 10, False)] and clipped == 2


@pytest.mark.parametrize("text, message", [
    ("1,3,10,20,30\n", r"gt.txt:1: expected frame,id,x,y,w,h"),
    ("1,3,ten,20,30,40\n", r"gt.txt:1: not numbers"),
    ("1,3,10,20,30,40\n9,3,10,20,30,40\n", r"gt.txt:2: frame 9 is past the end of the video \(2 frames\)"),
    ("0,3,10,20,30,40\n", r"gt.txt:1: frame 0 is not a frame number"),
    ("1,3,10,20,0,40\n", r"gt.txt:1: box 0x40 has no area"),
    ("1,3,200,20,30,40\n", r"gt.txt:1: box .* lies outside the 100x80 frame"),
    ("", r"gt.txt: no boxes"),
])
def test_bad_gt_rows_name_the_file_and_line(tmp_path, text, message):
    with pytest.raises(ValueError, match=message):
        read_gt(_gt(tmp_path, text), 2, (100, 80))


def test_mot_folder_layout_and_missing_parts(tmp_path):
    seq = tmp_path / "MOT-01"
    (seq / "img1").mkdir(parents=True)
    (seq / "gt").mkdir()
    for i in range(3):
        cv2.imwrite(str(seq / "img1" / f"{i + 1:06d}.jpg"), np.full((48, 64, 3), 40 * i, np.uint8))
    (seq / "gt" / "gt.txt").write_text("2,1,8,8,16,32,1,-1,-1,-1\n")
    (seq / "seqinfo.ini").write_text("[Sequence]\nframeRate=7\n")
    found = load_sequence(str(seq), (32, 32))
    assert found.frames.shape == (3, 32, 32, 3) and found.fps == 7
    np.testing.assert_allclose(found.boxes[1], [[4, 5.333, 12, 26.667]], atol=1e-3)  # 64x48 -> 32x32
    assert len(found.boxes[0]) == 0
    os.remove(seq / "gt" / "gt.txt")
    with pytest.raises(ValueError, match="img1/ but no gt/gt.txt"):
        load_sequence(str(seq), (32, 32))
    with pytest.raises(ValueError, match="one video file and its gt.txt"):
        load_sequence(str(tmp_path), (32, 32))
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_sequence(str(tmp_path / "nope"), (32, 32))


def test_temporal_split_keeps_a_gap_between_parts():
    assert temporal_split(795, 10.0, 0.068, 0.269, 2.5) == {
        "method": "temporal", "train": [1, 477], "val": [503, 556], "test": [582, 795], "gap_frames": 25}
    split = temporal_split(120, 25.0, 0.1, 0.2, 0.2)  # the gap is never under one second
    assert split["gap_frames"] == 25 and split["train"] == [1, 34] and split["test"] == [97, 120]
    with pytest.raises(ValueError, match="too few"):
        temporal_split(40, 25.0, 0.1, 0.2, 1.0)


def test_targets_peak_at_each_centre_with_its_box():
    config = sora_det.Config.tiny()
    boxes = np.array([[[8, 8, 24, 56], [40, 4, 60, 44], [70, 10, 90, 50], [0, 0, 0, 0]]], np.float32)
    labels = np.array([[0, 0, 1, -1]], np.int32)  # two people, an ignored region, padding
    heat, target = (np.asarray(t)[0] for t in render_targets(boxes, labels, 64, 96, config))
    peaks = np.argwhere(heat[..., 0] == 1.0)
    assert sorted(map(tuple, peaks)) == [(6, 12), (8, 4)]  # centre cells (row, column) at stride 4
    np.testing.assert_allclose(target[8, 4, :4], boxes[0, 0])
    np.testing.assert_allclose(target[6, 12, :4], boxes[0, 1])
    assert heat[..., 1][5, 20] == 1 and heat[..., 1][5, 4] == 0  # the ignored region's cells
    assert target[..., 4].max() == 1.0 and target[0, 23, 4] == 0.0


def test_augmented_clips_keep_boxes_on_their_pixels():
    """White boxes on black frames: after zoom, shift, flip and crop, every centre cell of the
    targets is white, and its box covers white."""
    config = dataclasses.replace(sora_det.Config.tiny(), aug_paste=0)
    rng = np.random.default_rng(0)
    frames = np.zeros((12, 96, 128, 3), np.uint8)
    boxes = []
    for i in range(12):
        x, y = rng.integers(0, 80), rng.integers(0, 40)
        frames[i, y:y + 40, x:x + 24] = 255
        boxes.append(np.array([[x, y, x + 24, y + 40]], np.float32))
    sequence = Sequence(frames, boxes, [np.array([1])] * 12, [np.zeros((0, 4), np.float32)] * 12, (128, 96), 10.0, "", "")
    clips, targets = next(iter(clip_stream(sequence, list(range(12)), config).take(1)))
    clips, heat, box = clips.numpy(), targets["heatmap"].numpy(), targets["sides"].numpy()
    checked = 0
    for b, t, i, j in np.argwhere(heat[..., 0] == 1.0):
        white = clips[b, t, ..., 0] > 128
        assert white[i * 4 + 2, j * 4 + 2]
        x1, y1, x2, y2 = box[b, t, i, j, :4].round().astype(int)
        assert white[y1:y2, x1:x2].mean() > 0.8
        checked += 1
    assert checked >= 2


@pytest.mark.parametrize("soft", [False, True])
def test_pasted_people_bring_their_boxes_and_motion(soft):
    t = 4
    clip = np.zeros((t, 96, 128, 3), np.uint8)
    boxes = np.zeros((t, 8, 4), np.float32)
    labels = np.full((t, 8), -1, np.int32)
    ids = np.full((t, 8), -1, np.int64)
    for k in range(t):  # one white person walking right, 2 px a frame
        clip[k, 30:70, 10 + 2 * k:30 + 2 * k] = 255
        boxes[k, 0], labels[k, 0], ids[k, 0] = (10 + 2 * k, 30, 30 + 2 * k, 70), 0, 7
    paste_people(clip, boxes, labels, ids, 1, (1.0, 1.0), np.random.default_rng(0), soft=soft)
    pasted = boxes[:, 1]
    assert (labels[:, 1] == 0).all() and np.allclose(pasted[:, 2] - pasted[:, 0], 20, atol=1)
    np.testing.assert_allclose(np.diff(pasted[:, 0]), 2, atol=1)  # it walks as the original does
    for k, (x1, y1, x2, y2) in enumerate(pasted.astype(int)):
        assert clip[k, (y1 + y2) // 2, (x1 + x2) // 2, 0] == 255


def test_decode_finds_the_peaks_with_their_boxes():
    heat = np.full((1, 8, 12, 1), -9.0, np.float32)
    heat[0, 2, 3], heat[0, 5, 9], heat[0, 5, 10] = 3.0, 1.0, 0.5  # (5, 10) is no peak beside (5, 9)
    sides = np.full((1, 8, 12, 4), 4.0, np.float32)
    boxes, scores = (np.asarray(t) for t in sora_det.decode(heat, sides, 3, 32, 48))
    np.testing.assert_allclose(boxes[0, :2], [[10, 6, 18, 14], [34, 18, 42, 26]])
    assert scores[0, 0] > scores[0, 1] > 0.5 > scores[0, 2]


def test_losses_are_zero_only_for_the_right_answer():
    config = sora_det.Config.tiny()
    boxes = np.array([[[8, 8, 24, 56]]], np.float32)
    heat, target = (np.asarray(t)[None] for t in render_targets(boxes, np.zeros((1, 1), np.int32), 64, 96, config))
    cy, cx = (np.arange(16)[:, None] + 0.5) * 4, (np.arange(24)[None, :] + 0.5) * 4
    exact = np.stack([cx - 8 + 0 * cy, cy - 8 + 0 * cx, 24 - cx + 0 * cy, 56 - cy + 0 * cx], -1)[None, None]
    assert float(BoxLoss()(target, exact.astype(np.float32))) == pytest.approx(0.0, abs=1e-4)
    assert float(BoxLoss()(target, exact.astype(np.float32) + 4)) > 0.1
    good = np.where(heat[..., :1] == 1, 9.0, -9.0).astype(np.float32)
    assert float(HeatmapLoss()(heat, good)) < float(HeatmapLoss()(heat, -good))


def test_coco_ap_counts_ignored_regions_neither_way():
    gt = [(np.array([[10, 10, 30, 60]], np.float32), np.array([[50, 0, 90, 40]], np.float32))] * 2
    perfect = [(np.array([[10, 10, 30, 60], [55, 5, 80, 35]], np.float32), np.array([0.9, 0.95], np.float32))] * 2
    found = ap_metrics(gt, perfect)
    assert found["ap50"] == pytest.approx(1.0) and found["precision"] == 1.0 and found["recall"] == 1.0
    wrong = [(np.array([[60, 60, 80, 90]], np.float32), np.array([0.9], np.float32))] * 2
    assert ap_metrics(gt, wrong)["ap50"] == 0.0 and ap_metrics(gt, wrong)["recall"] == 0.0


def test_tracks_of_perfect_detections_score_mota_and_idf1_of_one():
    n = 12
    boxes = [np.array([[10 + 3 * i, 10, 30 + 3 * i, 60], [80, 5 + 2 * i, 100, 55 + 2 * i]], np.float32) for i in range(n)]
    sequence = Sequence(np.zeros((n, 96, 128, 3), np.uint8), boxes, [np.array([1, 2])] * n,
                        [np.zeros((0, 4), np.float32)] * n, (128, 96), 10.0, "", "")
    tracked = track([(b, np.array([0.9, 0.8], np.float32)) for b in boxes], 10.0)
    found = tracking_metrics(sequence, list(range(n)), tracked)
    assert found["mota"] > 0.9 and found["idf1"] > 0.9 and found["id_switches"] == 0


def test_hog_baseline_runs_on_frames_of_the_sequence(walkers):
    from sora_tf.train.detect_eval import hog_detections

    sequence = load_sequence(walkers, (96, 128))
    found, seconds = hog_detections(sequence, [0, 1], upscale=2.0)
    assert len(found) == 2 and seconds > 0
    assert all(b.shape[1:] == (4,) and len(b) == len(s) for b, s in found)


def test_training_writes_ap_against_the_split(det_run):
    with open(os.path.join(det_run, "metrics.json")) as f:
        metrics = json.load(f)
    with open(os.path.join(det_run, "split.json")) as f:
        split = json.load(f)
    assert metrics["frame_ranges"] == {k: split[k] for k in ("train", "val", "test")}
    assert split["train"][1] < split["val"][0] - split["gap_frames"] and split["val"][1] < split["test"][0]
    for part in (metrics, metrics["test"]):
        assert 0 <= part["ap50"] <= 1 and 0 <= part["ap"] <= part["ap50"] + 1e-9
    assert metrics["test"]["frames"] == split["test"][1] - split["test"][0] + 1
    assert set(metrics["test"]["tracking"]) >= {"mota", "idf1"}
    # The single-frame twin trained beside it, measured on the same frames.
    assert metrics["test"]["single_frame"]["frames"] == metrics["test"]["frames"]
    with open(os.path.join(det_run, "single_frame", "config.json")) as f:
        assert json.load(f)["temporal"] is False


def test_evaluate_on_other_data_scores_all_its_frames(det_run, walkers, capsys):
    assert main(["evaluate", det_run, "--data", walkers]) == 0
    out = capsys.readouterr().out
    assert "(80 frames" in out and "tracking (ByteTrack): MOTA" in out


def test_resume_goes_on_from_the_last_epoch(walkers, tmp_path):
    from sora_tf.train.run import train
    from tests.conftest import history_epochs

    out = str(tmp_path / "run")
    train("sora_det", walkers, out, epochs=1, preset="tiny", verbose=0)
    train("sora_det", out=out, epochs=2, preset="tiny", verbose=0, resume=True)
    assert history_epochs(out) == [0, 1]


def test_bad_detection_data_is_a_clear_error(tmp_path, capsys):
    folder = tmp_path / "seq"
    folder.mkdir()
    (folder / "video.mp4").write_bytes(b"")
    (folder / "gt.txt").write_text("1,1,10,10,20,40,1,-1,-1,-1\n")
    assert main(["train", "--model", "sora_det", "--data", str(folder), "--preset", "tiny",
                 "--out", str(tmp_path / "run")]) == 2
    assert f"{folder / 'video.mp4'}: empty file" in capsys.readouterr().err
    assert main(["train", "--model", "sora_det", "--preset", "tiny", "--set", "crop_height=70",
                 "--out", str(tmp_path / "run2")]) == 2
    assert "crop_height must be a multiple of 16" in capsys.readouterr().err


@pytest.mark.slow
def test_export_detect_and_serving(det_run, walkers, tmp_path, capsys):
    from sora_tf.export.exporter import export_run
    from sora_tf.export import tflite
    from sora_tf.export.tflite import flex_ops

    result = export_run(det_run, str(tmp_path / "export"), calibration_clips=16)
    assert set(result["tflite"]) == {"stream_float32", "stream_int8"}
    assert all(flex_ops(p) == [] for p in result["tflite"].values())
    by_name = {p["artifact"]: p for p in result["parity"]}
    assert by_name["saved_model"]["max_rel_diff"] < 1e-3 and by_name["tflite_stream_float32"]["max_rel_diff"] < 1e-3
    assert "ap50" in by_name["tflite_stream_int8"]
    # int8: the convolutions of the frame CNN and the GRU compute in int8; the head stays float.
    from tensorflow.lite.python import schema_py_generated as schema
    model = tflite._read_model(open(result["tflite"]["stream_int8"], "rb").read())
    graph = model.subgraphs[0]
    convs = [graph.tensors[int(op.inputs[0])].type for op in graph.operators
             if max(model.operatorCodes[op.opcodeIndex].builtinCode,
                    model.operatorCodes[op.opcodeIndex].deprecatedBuiltinCode) == schema.BuiltinOperator.CONV_2D]
    assert convs.count(schema.TensorType.INT8) >= 2 * len(sora_det.Config.tiny().widths)  # CNN stages, GRU

    # The SavedModel in a process that cannot import sora_tf: any T, any frame size.
    proc = subprocess.run([sys.executable, "-c", SERVING_CHECK, result["saved_model"]], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["modules"] == [] and out["boxes"] == [2, 5, 10, 4] and out["count"] == [2, 5]
    assert out["stream_equals_clip"] and out["max_box"] <= 200.0

    video, mot = str(tmp_path / "annotated.mp4"), str(tmp_path / "tracks.txt")
    source = os.path.join(walkers, "video.mp4")
    for model in (result["tflite"]["stream_int8"], det_run):
        assert main(["detect", "--model", model, source, "--out", video, "--mot", mot, "--min-score", "0"]) == 0
        summary = json.loads(capsys.readouterr().out)
        assert summary["frames"] == 80 and summary["p95_ms"] >= summary["p50_ms"] > 0
        cap = cv2.VideoCapture(video)
        assert cap.read()[0] and cap.get(cv2.CAP_PROP_FRAME_WIDTH) == 128
        cap.release()
        import motmetrics as mm
        assert len(mm.io.loadtxt(mot, fmt="mot15-2D")) == summary["detections"]
    assert main(["detect", "--model", det_run, str(tmp_path / "missing.mp4")]) == 1
    assert "cannot open" in capsys.readouterr().err


SERVING_CHECK = WITHOUT_SORA_TF + r"""
import numpy as np
import tensorflow as tf
loaded = tf.saved_model.load(sys.argv[1])
spec = json.load(open(sys.argv[1] + "/assets.extra/sora_tf.json"))
frames = np.random.default_rng(0).integers(0, 256, (2, 5, 150, 200, 3)).astype(np.uint8)
clip = loaded.signatures["serving_default"](frames=tf.constant(frames))
state = {k: tf.zeros([2, *v[1:]]) for k, v in spec["states"].items()}
for t in range(5):
    step = loaded.signatures["stream"](frame=tf.constant(frames[:, t]), **state)
    state = {k: step[k] for k in state}
same = bool(np.allclose(step["boxes"].numpy(), clip["boxes"][:, -1].numpy(), atol=1e-3))
print(json.dumps({"boxes": list(clip["boxes"].shape), "count": list(clip["count"].shape), "stream_equals_clip": same,
                  "max_box": float(clip["boxes"].numpy().max()),
                  "modules": sorted(m for m in sys.modules if m.split(".")[0] == "sora_tf")}))
"""


def test_pets09_sequence_and_split():
    data = shared("pets09_s2l1")
    sequence = load_sequence(data, (288, 384))
    assert len(sequence.frames) == 795 and sequence.native_size == (768, 576)
    assert sum(map(len, sequence.boxes)) + sum(map(len, sequence.ignore)) == 4650
    assert temporal_split(len(sequence.frames), sequence.fps, 0.068, 0.269, 2.5)["test"] == [582, 795]
