"""The prepared fast path: TFRecords of JPEG frames give the video path's clips up to JPEG loss."""
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from sora_tf.cli import main
from sora_tf.data import prepared
from sora_tf.data.pipeline import dataset_for
from sora_tf.data.sources import list_clips


@pytest.fixture(scope="module")
def prepared_dir(tiny_data, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("prepared") / "tiny")
    assert main(["prepare", "--data", tiny_data, "--out", out, "--size", "48", "--shard-clips", "10"]) == 0
    return out


def test_prepare_writes_shards_and_manifest(prepared_dir, tiny_data):
    manifest = json.load(open(os.path.join(prepared_dir, "prepared.json")))
    assert manifest["shards"] == [f"clips-{i:05d}-of-00005.tfrecord" for i in range(5)]
    source, listing = list_clips(tiny_data), list_clips(prepared_dir)
    assert listing.classes == source.classes and listing.counts == source.counts
    assert listing.paths == source.paths and listing.prepared and listing.records == list(range(42))


@pytest.mark.parametrize("views", [None, 2])
def test_same_clips_as_the_video_path_up_to_jpeg_loss(prepared_dir, tiny_data, views):
    kwargs = dict(clip_len=8, size=(32, 32), training=False, batch_size=8, views=views)
    video = [b for b in dataset_for(list_clips(tiny_data), **kwargs)]
    fast = [b for b in dataset_for(list_clips(prepared_dir), **kwargs)]
    for a, b in zip(video, fast):
        assert a["path"].numpy().tolist() == b["path"].numpy().tolist()
        assert a["label"].numpy().tolist() == b["label"].numpy().tolist()
        assert a["frames"].shape == b["frames"].shape
        diff = np.abs(a["frames"].numpy().astype(int) - b["frames"].numpy().astype(int)).mean()
        assert diff < 6, diff


@pytest.mark.parametrize("source", ["videos", "prepared"])
@pytest.mark.parametrize("training", [True, False])
def test_readers_run_without_the_autotuner(prepared_dir, tiny_data, source, training):
    """Its thread held up the end of every pass (see `without_autotune_stall`); both readers
    turn it off, for training and evaluation, and still decode files in parallel."""
    listing = list_clips(tiny_data if source == "videos" else prepared_dir)
    ds = dataset_for(listing, clip_len=4, size=(24, 24), training=training, batch_size=4)
    assert ds.options().autotune.enabled is False
    assert next(iter(ds))["frames"].shape == (4, 4, 24, 24, 3)


@pytest.mark.parametrize("where", ["eager", "tf.data"])
def test_decode_jpegs_resizes_in_graph(prepared_dir, where):
    record = next(iter(tf.data.TFRecordDataset(os.path.join(prepared_dir, "clips-00000-of-00005.tfrecord"))))
    jpegs = prepared._parse(record)["jpegs"]
    if where == "eager":
        frames = prepared.decode_jpegs(jpegs, (24, 24))
    else:
        frames = next(iter(tf.data.Dataset.from_tensors(jpegs).map(lambda j: prepared.decode_jpegs(j, (24, 24)))))
    assert frames.shape == (16, 24, 24, 3) and frames.dtype == tf.uint8


def test_training_reads_a_prepared_folder(prepared_dir, tmp_path):
    from sora_tf.train.run import train

    run = train("sora_cls", prepared_dir, str(tmp_path / "run"), epochs=1, preset="tiny", verbose=0)
    assert json.load(open(os.path.join(run, "run.json")))["data"] == os.path.abspath(prepared_dir)
    assert os.path.isfile(os.path.join(run, "best.keras"))


def test_interrupted_prepare_leaves_nothing(tiny_data, tmp_path, monkeypatch):
    calls = []

    def crash(*args):
        calls.append(1)
        if len(calls) > 3:
            raise KeyboardInterrupt
        return b""
    monkeypatch.setattr(prepared, "_example", crash)
    with pytest.raises(KeyboardInterrupt):
        prepared.prepare(list_clips(tiny_data), str(tmp_path / "out"), size=32, shard_clips=2)
    assert os.listdir(tmp_path) == []


def test_bad_settings_and_stale_format(tiny_data, tmp_path):
    with pytest.raises(ValueError, match="bad prepare settings"):
        prepared.prepare(list_clips(tiny_data), str(tmp_path / "x"), quality=0)
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "prepared.json").write_text(json.dumps({"format": "other/0"}))
    with pytest.raises(ValueError, match="prepared format"):
        list_clips(str(tmp_path / "old"))


def _records(folder):
    """{index: (label, jpeg bytes)} of every record in a prepared folder's shards."""
    out = {}
    for name in json.load(open(os.path.join(folder, prepared.MANIFEST)))["shards"]:
        for raw in tf.data.TFRecordDataset(os.path.join(folder, name)):
            e = prepared._parse(raw)
            out[int(e["index"])] = (int(e["label"]), [bytes(j) for j in e["jpegs"].numpy()])
    return out


def test_beam_pipeline_writes_what_the_local_prepare_writes(tiny_data, tmp_path):
    pytest.importorskip("apache_beam", reason="the beam extra is not installed (make setup installs it)")
    import shutil

    data = tmp_path / "videos"
    shutil.copytree(tiny_data, data)
    os.remove(data / "manifest.csv")
    (data / "up" / "broken.mp4").write_bytes(b"not a video" * 50)
    local, beam = str(tmp_path / "local"), str(tmp_path / "beam")
    assert main(["prepare", "--data", str(data), "--out", local, "--size", "32", "--shard-clips", "16"]) == 0
    assert main(["prepare", "--runner", "beam", "--beam-args=--runner=DirectRunner", "--data", str(data),
                 "--out", beam, "--size", "32", "--shard-clips", "16"]) == 0
    want, got = prepared.load_manifest(local), prepared.load_manifest(beam)
    assert got["clips"] == want["clips"] and len(got["clips"]) == len(list_clips(tiny_data).paths)
    assert got["shards"] == want["shards"] and (got["size"], got["classes"]) == (want["size"], want["classes"])
    assert [s["path"] for s in got["skipped"]] == [s["path"] for s in want["skipped"]] == [str(data / "up" / "broken.mp4")]
    assert _records(beam) == _records(local)  # same clips, labels and frames (JPEG bytes), same numbering
    assert len(list_clips(beam).paths) == len(got["clips"])  # and training reads it
