"""`make bench`: measured figures, each with its baseline from the same run and the command
that produced it, written to BENCHMARKS.md (for people) and benchmarks.json (for scripts).

The machine is shared and noisy, so every figure is compared with a baseline measured in the
same process minutes apart, and the ratio is what to read. Nothing here is asserted by tests.
One module per section: inputs, training, augment, tflite, detect, index; report writes both files.
"""
import argparse
import os
import sys

from sora_tf.bench.report import COMMAND, peak_rss_mb, write_reports
from sora_tf.config import override

# The sora_cls recipes considered (docs/sora_cls.md), timed as streams beside MoViNet-A0-Stream.
STREAM_RECIPES = {
    "last state, the previous default": ["pooling=last"],
    "normal flow": ["normal_flow=true"],
    "motion only": ["appearance=false"],
    "mobilenet_v3_small backbone": ["backbone=mobilenet_v3_small"],
    "motion recipe, auto's pick under 100 sources": ["recipe=motion"],
}
SECTIONS = ("input", "long", "train", "precision", "augment", "tflite", "stream", "detect", "index")


def main(argv=None):
    ap = argparse.ArgumentParser(prog="sora_tf.bench", description=__doc__)
    ap.add_argument("--only", choices=SECTIONS, action="append", help="run only this section (repeatable)")
    ap.add_argument("--long-video", default=os.path.join("..", "shared", "data", "pets09_s2l1", "vtest.avi"),
                    help="a long video for the memory figure (skipped when absent)")
    ap.add_argument("--data", help="video data for the input and training figures (default: generated)")
    ap.add_argument("--clips", type=int, default=280, help="clips read by each input path")
    ap.add_argument("--export", help="a tflite/<version> folder (default: the newest export of the newest run)")
    ap.add_argument("--detect-export", help="a sora_det tflite/<version> folder (default: the newest under export/)")
    args = ap.parse_args(argv)
    only = set(args.only or SECTIONS)
    results = {}
    if "long" in only and os.path.isfile(args.long_video):
        from sora_tf.bench.inputs import bench_long_video
        results["Long video, one clip (memory)"] = bench_long_video(args.long_video)
    if only & {"input", "train"}:
        from sora_tf.data import synthetic
        data = args.data or synthetic.ensure("default")
        if "input" in only:
            from sora_tf.bench.inputs import bench_input
            results["Input pipeline (eval clips, 16 frames at 64x64)"] = bench_input(data, args.clips)
        if "train" in only:
            from sora_tf.bench.training import bench_train_step
            results["Training step (sora_cls default)"] = bench_train_step(data)
    if "precision" in only:
        from sora_tf.bench.training import bench_precision
        results["Training step: mixed precision and XLA (sora_cls default, one cached batch)"] = bench_precision()
    if "augment" in only:
        from sora_tf.bench.augment import bench_augment
        results["Augmentation"] = bench_augment()
    if "tflite" in only or "stream" in only:
        from sora_tf.bench.tflite import bench_stream_vs_movinet, bench_tflite
        from sora_tf.export.saved_model import published_tflite
        from sora_tf.models import sora_cls
        export_dir = args.export
        if export_dir is None:  # the newest version published whole
            export_dir = published_tflite(os.path.join("export", "sora_cls"))
        if "tflite" in only:
            if export_dir is None:
                print("no export/sora_cls/tflite/<version>: run `make train` and `make export` first", file=sys.stderr)
                return 2
            results["TFLite (LiteRT, XNNPACK)"] = bench_tflite(export_dir)
        if "stream" in only:
            base = sora_cls.Config()
            recipes = {"network, auto's pick from 100 sources": base}
            for name, sets in STREAM_RECIPES.items():
                recipes[name] = override(base, sets)
            results["Streaming vs MoViNet-A0-Stream"] = bench_stream_vs_movinet(recipes)
    if "detect" in only:
        from sora_tf.bench.detect import bench_detect
        from sora_tf.export.saved_model import published_tflite
        found = args.detect_export or published_tflite(os.path.join("export", "sora_det"))
        if found is None:
            print("no export/sora_det/tflite/<version>: skipping detection (`make train MODEL=sora_det`, "
                  "`make export MODEL=sora_det`)", file=sys.stderr)
        else:
            results["Detection per frame (sora_det TFLite vs OpenCV HOG)"] = bench_detect(found, args.long_video)
    if "index" in only:
        from sora_tf.bench.index import bench_index
        results["Nearest-neighbour index (FAISS), per query"] = bench_index()
    results["Peak memory"] = [{"process": "bench", "peak_rss_mb": peak_rss_mb(), "command": COMMAND}]
    write_reports(results)
    with open("BENCHMARKS.md") as f:
        print(f.read())
    return 0

