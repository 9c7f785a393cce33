"""The uses of the clip embedding: embed, search, duplicates, map, kNN anomaly scores, retrieval
figures, the baselines and the index, on the tiny generated data."""
import csv
import json
import os
import shutil

import cv2
import numpy as np
import pytest

from sora_tf.cli import main
from sora_tf.embedding import index as vector_index
from sora_tf.embedding import measure, store, uses
from sora_tf.embedding.embedders import HistogramEmbedder, PixelsEmbedder, load_embedder


@pytest.fixture(scope="module")
def collection(tiny_data, tmp_path_factory):
    """A copy of the tiny data (this module adds and removes files in it)."""
    root = tmp_path_factory.mktemp("collection") / "videos"
    shutil.copytree(tiny_data, root)
    os.remove(root / "manifest.csv")  # a plain class-per-folder directory
    return root


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_embed_search_duplicates_map_end_to_end(tiny_run, collection, tmp_path, capsys):
    emb = str(tmp_path / "emb")
    assert main(["embed", "--model", tiny_run, "--data", str(collection), "--out", emb]) == 0
    meta = json.load(open(os.path.join(emb, "embedding.json")))
    vectors = np.load(os.path.join(emb, "vectors.npy"))
    rows = _rows(os.path.join(emb, "clips.csv"))
    n = len(rows)
    assert meta["clips"] == meta["embedded_now"] == n == len(vectors) > 0 and meta["dim"] == vectors.shape[1]
    # The duplicate threshold, from copies of its own clips: most copies reach it.
    assert meta["calibration"]["copies"] == 32 and -1 < meta["duplicate_threshold"] <= 1
    assert meta["calibration"]["copy_similarity_median"] >= meta["duplicate_threshold"]
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    assert {r["split"] for r in rows} == {""}  # not the run's own data folder: unknown
    assert os.stat(os.path.join(emb, "vectors.npy")).st_mode & 0o044 == 0o044  # readable under umask 022
    capsys.readouterr()

    # A video of the collection finds itself first (the same eval views, the same vector).
    video = rows[3]["path"]
    assert main(["search", "--index", emb, video, "--k", "3", "--out", str(tmp_path / "s.json")]) == 0
    found = json.load(open(tmp_path / "s.json"))[0]["neighbours"]
    assert len(found) == 3 and found[0]["path"] == video and found[0]["similarity"] > 0.9999
    # A clip of the folder, by path: itself left out, the rest in order of similarity.
    results = uses.search(emb, clip=video, k=4)[0][1]
    assert video not in [r["path"] for r in results] and len(results) == 4
    assert results[0]["path"] == found[1]["path"]
    assert [r["similarity"] for r in results] == sorted((r["similarity"] for r in results), reverse=True)

    # Grown folder: a byte-identical copy (a re-upload) is embedded, nothing else is; the copy is
    # the nearest duplicate of its original.
    copy = os.path.join(os.path.dirname(video), "copy_of_" + os.path.basename(video))
    shutil.copy(video, copy)
    try:
        assert main(["embed", "--model", tiny_run, "--data", str(collection), "--out", emb]) == 0
        meta = json.load(open(os.path.join(emb, "embedding.json")))
        assert (meta["clips"], meta["embedded_now"], meta["reused"]) == (n + 1, 1, n)
        grown = np.load(os.path.join(emb, "vectors.npy"))
        np.testing.assert_array_equal(grown[:n], vectors)  # the old vectors kept as they were
        assert main(["duplicates", "--index", emb, "--threshold", "0.9999"]) == 0
        pairs = _rows(os.path.join(emb, "duplicates.csv"))
        assert {pairs[0]["path_a"], pairs[0]["path_b"]} == {video, copy}
        assert all(float(p["similarity"]) >= 0.9999 for p in pairs)
    finally:
        os.remove(copy)
    # ... and once removed again, it is dropped, the others kept.
    assert main(["embed", "--model", tiny_run, "--data", str(collection), "--out", emb]) == 0
    meta = json.load(open(os.path.join(emb, "embedding.json")))
    assert (meta["clips"], meta["embedded_now"], meta["dropped"]) == (n, 0, 1)

    assert main(["map", "--index", emb, "--out", str(tmp_path / "map.png"), "--outliers", "0.1"]) == 0
    picture = cv2.imread(str(tmp_path / "map.png"))
    assert picture is not None and picture.std() > 0
    assert "4 outliers marked" in capsys.readouterr().out  # 10% of 42 clips

    # Another embedder cannot write into this folder.
    assert main(["embed", "--model", "histogram", "--data", str(collection), "--out", emb]) == 2
    assert "give a new --out" in capsys.readouterr().err


def test_the_run_s_own_data_gets_its_split(tiny_run, tiny_data, tmp_path):
    meta = store.embed(tiny_run, tiny_data, str(tmp_path / "emb"), views=1, crops=1)
    rows = _rows(tmp_path / "emb" / "clips.csv")
    split = json.load(open(os.path.join(tiny_run, "split.json")))
    val = {os.path.realpath(p) for p in split["val_paths"]}
    assert {r["path"] for r in rows if r["split"] == "val"} == {p for p in (r["path"] for r in rows)
                                                                 if os.path.realpath(p) in val}
    assert {r["split"] for r in rows} >= {"train", "val"} and meta["sampling"]["views"] == 1


def test_broken_videos_are_skipped_and_counted(collection, tmp_path, capsys):
    broken = [collection / "up" / "corrupt.mp4", collection / "up" / "empty.mp4"]
    broken[0].write_bytes(b"not a video at all" * 100)
    broken[1].write_bytes(b"")
    emb = str(tmp_path / "emb")
    try:
        assert main(["embed", "--model", "histogram", "--data", str(collection), "--out", emb]) == 0
        meta = json.load(open(os.path.join(emb, "embedding.json")))
        assert meta["skipped"] == 2 and {s["path"] for s in meta["skipped_files"]} == set(map(str, broken))
        good = _rows(os.path.join(emb, "clips.csv"))[0]["path"]
        capsys.readouterr()
        # Searching with broken and missing videos: each named with its error, the good one answered.
        assert main(["search", "--index", emb, good, str(broken[0]), str(tmp_path / "missing.mp4")]) == 1
        out, err = capsys.readouterr()
        assert "  1. 1.0000" in out and "corrupt.mp4: error" in err and "missing.mp4: error" in err
        assert main(["anomaly", "--index", emb, good, str(broken[1])]) == 1
        out, err = capsys.readouterr()
        assert "score" in out and "empty.mp4: error" in err
        assert main(["duplicates", "--index", emb]) == 0 and main(["map", "--index", emb, "--out",
                                                                    str(tmp_path / "m.png")]) == 0
    finally:
        for path in broken:
            path.unlink()


def test_bad_arguments_get_clear_errors(tmp_path, collection, capsys):
    cases = [(["search", "--index", str(tmp_path / "none"), "--clip", "x.mp4"], "not an embedding folder"),
             (["embed", "--model", str(tmp_path / "nope"), "--data", str(collection), "--out", str(tmp_path / "e")],
              "no such model"),
             (["embed", "--model", "pixels", "--data", str(collection), "--out", str(tmp_path / "e"),
               "--crops", "2"], "--crops must be 1 or 3"),
             (["map", "--index", str(tmp_path), "--out", str(tmp_path / "map.jpg")], "write the map to a .png")]
    for argv, message in cases:
        assert main(argv) == 2, argv
        assert message in capsys.readouterr().err, argv
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "mine.txt").write_text("a user's file")
    assert main(["embed", "--model", "pixels", "--data", str(collection), "--out", str(notes)]) == 2
    assert "other files in it" in capsys.readouterr().err and (notes / "mine.txt").exists()


def test_baselines_see_colour_and_motion():
    rng = np.random.default_rng(0)
    still = np.repeat(rng.integers(0, 255, (1, 1, 32, 32, 3), dtype=np.uint8), 8, axis=1)
    moving = np.stack([np.roll(still[0, 0], 3 * t, axis=1) for t in range(8)])[None]  # pans right
    for embedder in (HistogramEmbedder(), PixelsEmbedder()):
        a, b = embedder.embed(np.concatenate([still, still])), embedder.embed(moving)
        np.testing.assert_array_equal(a[0], a[1])
        assert a.shape[1] == b.shape[1] and a.dtype == np.float32
    h = HistogramEmbedder().embed(np.concatenate([still, moving]))
    np.testing.assert_allclose(h[0, :64], h[1, :64], atol=1e-6)  # same colours ...
    assert np.abs(h[0, 64:80] - h[1, 64:80]).sum() > 0.5  # ... different motion
    assert load_embedder("pixels").num_frames == 16  # sampled as sora_cls's defaults


def test_retrieval_figures_on_a_handmade_collection():
    # Two classes along two axes; the queries sit on them.
    collection = store.normalised(np.array([[1, 0.1], [1, -0.1], [0.1, 1], [-0.1, 1]], np.float32))
    queries = store.normalised(np.array([[1, 0], [0, 1]], np.float32))
    got = measure.class_retrieval(queries, [0, 1], collection, [0, 0, 1, 1], k=2)
    assert got == {"precision_at_2": 1.0, "map": 1.0}
    got = measure.class_retrieval(queries, [1, 0], collection, [0, 0, 1, 1], k=2)
    assert got["precision_at_2"] == 0.0 and got["map"] < 0.5
    # Same source: clip 0 finds its partner 1 first; clip 2 finds clip 1 before its partner 3.
    vectors = store.normalised(np.array([[1, 0], [0.9, 0.1], [0, 1], [-1, 0.05]], np.float32))
    recall, n = measure.source_recall(vectors, ["a", "a", "b", "b"], [0, 2], k=1)
    assert n == 2 and recall == 0.5
    dup = measure.duplicate_pairs(vectors, ["a", "a", "b", "b"], vectors, ["a", "a", "b", "b"], 0.99)
    assert dup["pairs"] == 6 and dup["same_source_pairs"] == 2
    assert (dup["at_calibrated_threshold"]["precision"], dup["at_calibrated_threshold"]["recall"]) == (1.0, 0.5)
    # Ranked: (0, 1) same, (1, 2) not, (2, 3) same, ...: best F1 takes all three, P 2/3, R 1.
    assert dup["at_train_best_f1_threshold"]["f1"] == pytest.approx(0.8)
    assert dup["average_precision"] == pytest.approx((1 + 2 / 3) / 2)


def test_knn_scores_and_both_indexes():
    rng = np.random.default_rng(0)
    centres = store.normalised(rng.standard_normal((20, 16)))
    normal = store.normalised(np.repeat(centres, 30, axis=0) + 0.05 * rng.standard_normal((600, 16)))
    near = store.normalised(centres[:5] + 0.05 * rng.standard_normal((5, 16)))
    far = store.normalised(rng.standard_normal((5, 16)))
    scores = uses.knn_scores(normal, np.concatenate([near, far]), k=5)
    assert scores[:5].max() < scores[5:].min()
    # With itself in the collection, a clip is left out of its own neighbours.
    own = uses.knn_scores(normal, normal[:3], k=5, exclude=np.arange(3))
    assert own.min() > 0.0
    exact, graph = vector_index.build(normal, exact=True), vector_index.build(normal, exact=False)
    assert type(exact).__name__ == "IndexFlatIP" and type(graph).__name__ == "IndexHNSWFlat"
    _, want = vector_index.search(exact, near, 10)
    _, got = vector_index.search(graph, near, 10)
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(want, got)]) >= 0.9


@pytest.mark.slow
def test_retrieval_command_writes_figures_for_the_run_and_its_baselines(tiny_run, capsys):
    assert main(["retrieval", tiny_run, "--k", "3", "--normal", "up", "--normal", "down"]) == 0
    out = capsys.readouterr().out
    result = json.load(open(os.path.join(tiny_run, "retrieval.json")))
    assert set(result["embedders"]) == {"sora (trained run)", "untrained", "histogram", "pixels"}
    split = json.load(open(os.path.join(tiny_run, "split.json")))
    assert result["num_queries"] == len(split["val_paths"]) and result["num_collection"] == len(split["train"])
    for name, figures in result["embedders"].items():
        assert 0.0 <= figures["class"]["precision_at_3"] <= 1.0 and 0.0 < figures["class"]["map"] <= 1.0
        assert figures["copies"]["copies"] == result["num_queries"]
        assert 0.0 <= figures["copies"]["recall_at_1"] <= 1.0
        assert figures["copies"]["copies_at_or_above"] >= 0.5  # calibrated on other clips' copies
        assert figures["anomaly"]["normal"] == ["up", "down"] and name in out
    # The untrained twin is not the trained model: their vectors differ, so do their figures.
    assert result["embedders"]["untrained"] != result["embedders"]["sora (trained run)"]
    assert main(["retrieval", tiny_run, "--normal", "nope"]) == 2
    assert "give classes of the run" in capsys.readouterr().err
