"""Bad input gets a clear error that names it (no traceback), or a counted skip; the commands a
user reaches for on the first day exist and explain themselves."""
import argparse
import json
import os
import shutil
import zipfile

import pytest

from sora_tf import cli
from sora_tf.data.sources import list_clips


def _manifest(path, rows, encoding="utf-8"):
    with open(path, "w", encoding=encoding, newline="") as f:
        f.write("\n".join(",".join(r) for r in rows) + "\n")
    return path


def _clips(tiny_data, cls, n=2):
    folder = os.path.join(tiny_data, cls)
    return [os.path.join(folder, name) for name in sorted(os.listdir(folder))[:n]]


def _error(capsys, argv):
    assert cli.main(argv) == 2
    return capsys.readouterr().err


def test_manifest_errors_name_the_file_and_line(tiny_data, tmp_path):
    up, down = _clips(tiny_data, "up"), _clips(tiny_data, "down")
    rows = [["path", "label"], [up[0], "up"], [up[1], ""], [down[0], "down"]]
    with pytest.raises(ValueError, match=r"m.csv:3: no label in this row"):
        list_clips(_manifest(tmp_path / "m.csv", rows))
    with pytest.raises(ValueError, match=r"latin.csv: not UTF-8"):
        list_clips(_manifest(tmp_path / "latin.csv", [["path", "label"], [up[0], "café"]], "latin-1"))
    bom = _manifest(tmp_path / "bom.csv", [["path", "label"], [up[0], "up"], [down[0], "down"]], "utf-8-sig")
    assert list_clips(bom).classes == ["down", "up"]  # Excel's UTF-8 CSV: a byte-order mark before the header


def test_hidden_files_are_counted_in_the_data_report(tiny_data, tmp_path):
    root = tmp_path / "data"
    for cls in ("up", "down"):
        shutil.copytree(os.path.join(tiny_data, cls), root / cls)
    (root / "up" / ".DS_Store").write_bytes(b"\0\1")
    (root / "down" / "._down_0000.mp4").write_bytes(b"\0\1")
    summary = list_clips(root).summary()
    assert summary["hidden_files_passed_over"] == 2 and summary["clips"] == 12
    assert {os.path.basename(p) for p in summary["hidden_files"]} == {"._down_0000.mp4", ".DS_Store"}


def test_out_paths_that_would_lose_a_users_files(tiny_data, tmp_path, capsys):
    taken = tmp_path / "taken.txt"
    taken.write_text("mine")
    assert "a file is there" in _error(capsys, ["train", "--preset", "tiny", "--out", str(taken)])
    assert "a file is there" in _error(capsys, ["prepare", "--data", tiny_data, "--out", str(taken)])
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "notes.txt").write_text("keep me")
    assert "not prepared data" in _error(capsys, ["prepare", "--data", tiny_data, "--out", str(notes)])
    assert (notes / "notes.txt").read_text() == "keep me"
    assert "not a generated dataset" in _error(capsys, ["make-data", "--variant", "tiny", "--out", str(notes)])
    assert (notes / "notes.txt").read_text() == "keep me"


def test_bad_values_name_the_setting(tmp_path, capsys, monkeypatch):
    assert "cnn_widths: expected comma-separated numbers" in _error(
        capsys, ["train", "--preset", "tiny", "--set", "cnn_widths=16,abc"])
    assert "learning_rate: expected a finite number" in _error(
        capsys, ["train", "--preset", "tiny", "--set", "learning_rate=nan"])
    assert "test_fraction" in _error(capsys, ["train", "--preset", "tiny", "--set", "test_fraction=0.9"])
    assert "--epochs must be >= 1" in _error(capsys, ["train", "--preset", "tiny", "--epochs", "0"])
    monkeypatch.chdir(tmp_path)  # no runs/ here
    assert "no run of sora_cls under runs/ to resume" in _error(capsys, ["train", "--resume"])


def test_broken_run_files_name_themselves(tiny_run, tiny_data, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "run.json").write_text("{not json")
    assert f"{run / 'run.json'}: not valid JSON" in _error(capsys, ["evaluate", str(run)])
    shutil.copy(os.path.join(tiny_run, "run.json"), run / "run.json")
    (run / "state.json").write_text('{"epoch": 1}')
    assert "state.json: no 'best' in it" in _error(capsys, ["train", "--out", str(run), "--resume"])
    best = run / "best.keras"
    best.write_bytes(open(os.path.join(tiny_run, "best.keras"), "rb").read()[:5000])  # truncated
    assert f"{best}: not a checkpoint this version of sora_tf can load" in _error(capsys, ["evaluate", str(run)])
    with zipfile.ZipFile(best, "w") as z:  # a config that builds nothing
        z.writestr("metadata.json", json.dumps({"keras_version": "3.15.0"}))
        z.writestr("config.json", json.dumps({"module": "sora_tf.models.sora_cls", "class_name": "SoraCls",
                                              "registered_name": "sora_tf>SoraCls",
                                              "config": {"config": {"num_frames": "many"}}}))
    assert f"{best}: not a checkpoint" in _error(capsys, ["evaluate", str(run)])
    assert "no such run folder" in _error(capsys, ["evaluate", str(tmp_path / "nowhere")])


def test_command_arguments_out_of_range(tiny_run, tiny_data, tmp_path, capsys):
    video = _clips(tiny_data, "up", 1)[0]
    assert "--top must be >= 1" in _error(capsys, ["predict", "--model", tiny_run, "--top", "0", video])
    assert "--top must be >= 1" in _error(capsys, ["predict", "--model", tiny_run, "--top", "-1", video])
    assert ".csv or a .json" in _error(capsys, ["predict", "--model", tiny_run, "--out", "p.txt", video])
    assert "no video files" in _error(capsys, ["predict", "--model", tiny_run, str(tmp_path)])
    for flag, value in (("--window", "-3"), ("--every", "0"), ("--max-frames", "0"), ("--threads", "0")):
        assert f"{flag} must be >= " in _error(capsys, ["stream", "--model", "stream.tflite", video, flag, value])
    for flag in ("--calibration-clips", "--parity-clips"):  # 0 would read as "all of them"
        out = tmp_path / "export"
        assert f"{flag} must be >= 1, got 0" in _error(capsys, ["export", tiny_run, "--out", str(out), flag, "0"])
        assert not out.exists()


def test_predict_takes_folders_and_writes_csv_and_json(tiny_run, tiny_data, tmp_path, capsys):
    folder = tmp_path / "videos"
    shutil.copytree(os.path.join(tiny_data, "up"), folder / "up")
    (folder / "up" / "notes.txt").write_text("not a video")
    (folder / "broken.mp4").write_bytes(b"\0" * 100)
    for out in ("p.csv", "p.json"):
        assert cli.main(["predict", "--model", tiny_run, str(folder), "--top", "2", "--out", str(tmp_path / out)]) == 1
        capsys.readouterr()
    rows = open(tmp_path / "p.csv").read().splitlines()
    assert rows[0] == "video,class1,probability1,class2,probability2,error"
    assert len(rows) == 1 + 7  # six videos and the broken one; notes.txt is not a video
    predictions = json.load(open(tmp_path / "p.json"))
    broken = [p for p in predictions if p["video"].endswith("broken.mp4")]
    assert len(predictions) == 7 and broken[0]["error"] and broken[0]["top"] == []
    assert all(len(p["top"]) == 2 for p in predictions if not p["error"])


def test_version_models_and_help_on_every_argument(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("sora_tf ")
    assert cli.main(["models"]) == 0
    out = capsys.readouterr().out
    assert "sora_cls (task: classify)" in out and "sora_vaegan (task: generate)" in out
    assert "    rnn_units = 128" in out and "blocks" not in out
    parser = cli.parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in commands.choices.items():
        for action in sub._actions:
            if not isinstance(action, argparse._HelpAction):
                assert action.help, f"{name} {action.dest} has no --help text"
