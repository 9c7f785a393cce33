"""`make bench` runs its sections and writes both reports (figures are not asserted: timings
are measurements, not behaviour)."""
import json
import os

import pytest

from sora_tf import bench


def test_bench_input_and_augment_write_reports(tiny_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert bench.main(["--only", "input", "--only", "augment", "--data", tiny_data, "--clips", "6"]) == 0
    report = json.load(open("benchmarks.json"))
    rows = {r["label"]: r for r in report["Input pipeline (eval clips, 16 frames at 64x64)"]}
    assert set(rows) == {"a", "b", "c", "d", "d0"} and rows["a"]["clips"] == 6 and rows["d"]["passes"] == 3
    for x in "bc":  # each ratio is its path's clips/s over the baseline's, not the other way round
        assert rows[x][f"{x}/a"] == pytest.approx(rows[x]["clips_per_s"] / rows["a"]["clips_per_s"])
        assert rows[x][f"{x}/d"] == pytest.approx(rows[x]["clips_per_s"] / rows["d"]["clips_per_s"])
        assert rows[x]["clips_per_s"] == pytest.approx(6 / rows[x]["seconds"])
    assert all(r["command"].startswith("python -m sora_tf.bench") for r in rows.values())
    [augment] = report["Augmentation"]
    assert augment["speedup"] == pytest.approx(augment["baseline_ms"] / augment["ours_ms"])
    text = open("BENCHMARKS.md").read()
    assert "b/a" in text and "Keras image-layer chain" in text


def test_bench_tflite_needs_an_export(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert bench.main(["--only", "tflite"]) == 2
    assert "make export" in capsys.readouterr().err


def test_stream_rows_time_movinet_in_the_same_rounds(tmp_path, monkeypatch):
    """Each recipe's ratio is the median of its per-round ratios to MoViNet-A0-Stream, timed in
    the same rounds; without ../shared the MoViNet row says why it is missing."""
    from sora_tf.bench.tflite import MOVINET, bench_stream_vs_movinet
    from sora_tf.models import sora_cls

    config = sora_cls.Config.tiny()
    assert "absent" in bench_stream_vs_movinet({"tiny": config}, movinet=str(tmp_path / "none.tflite"))[0]["skipped"]
    if not os.path.isfile(MOVINET):
        pytest.skip(f"{MOVINET} is absent (../shared)")
    movinet, row = bench_stream_vs_movinet({"tiny": config}, rounds=2, steps=3)
    assert "MoViNet" in movinet["figure"] and movinet["ms_per_frame"] > 0
    assert row["movinet_ms_same_rounds"] == movinet["ms_per_frame"] and row["rounds"] == 2
    assert 0 < row["ratio_vs_movinet"] and "172x172" in row["figure"]


def test_index_rows_time_both_indexes_and_the_graph_s_recall():
    from sora_tf.bench.index import bench_index

    rows = bench_index(sizes=(2_000,), dim=16, queries=20, k=5)
    assert [(r["data"], r["index"].split()[0]) for r in rows] == [
        ("random", "exact"), ("random", "HNSW"), ("clustered", "exact"), ("clustered", "HNSW")]
    assert all(r["recall_at_5"] == 1.0 for r in rows[::2])  # the exact index is the reference
    assert all(0.5 <= r["recall_at_5"] <= 1.0 and r["query_ms"] > 0 and r["build_s"] > 0 for r in rows)


def test_gpu_check_runs_and_says_where_the_work_runs(capsys):
    from sora_tf import gpu_check

    assert gpu_check.main(["--steps", "1"]) == 0
    out = capsys.readouterr().out
    assert '"figure": "sora_cls training step"' in out and '"frames_on": "' in out
    if '"gpus": []' in out:
        assert "no GPU visible to TensorFlow" in out
    else:
        assert "placement as the README says" in out
