"""`make bench` runs its sections and writes both reports (figures are not asserted: timings
are measurements, not behaviour)."""
import json

from sora_tf import bench


def test_bench_input_and_augment_write_reports(tiny_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert bench.main(["--only", "input", "--only", "augment", "--data", tiny_data, "--clips", "6"]) == 0
    report = json.load(open("benchmarks.json"))
    rows = {r["label"]: r for r in report["Input pipeline (eval clips, 16 frames at 64x64)"]}
    assert set(rows) == {"a", "b", "c", "d", "d0"} and rows["a"]["clips"] == 6 and rows["d"]["passes"] == 3
    assert rows["b"]["b/a"] > 0 and rows["c"]["c/d"] > 0
    assert all(r["command"].startswith("python -m sora_tf.bench") for r in rows.values())
    assert report["Augmentation"][0]["speedup"] > 0
    text = open("BENCHMARKS.md").read()
    assert "b/a" in text and "Keras image-layer chain" in text


def test_bench_tflite_needs_an_export(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert bench.main(["--only", "tflite"]) == 2
    assert "make export" in capsys.readouterr().err
