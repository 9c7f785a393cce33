"""`make bench` runs its sections and writes both reports (figures are not asserted: timings
are measurements, not behaviour)."""
import json

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
