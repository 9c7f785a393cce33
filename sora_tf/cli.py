"""`python -m sora_tf` (also `sora-tf`): the command line only parses and wires; work lives in the library."""
import argparse
import json
import logging
import sys


def _common_train(p):
    p.add_argument("--model", default="sora_cls", help="model name: sora_tf/models/<name>.py (`models` lists them)")
    p.add_argument("--data", help="class-per-folder directory or CSV manifest (path,label[,group][,split]); "
                                  "default: the generated dataset, built on first use")
    p.add_argument("--strict", action="store_true", help="an unusable video is an error, not a counted skip")


def _version():
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sora_tf")
    except PackageNotFoundError:
        return "unknown (not installed)"


def parser():
    ap = argparse.ArgumentParser(prog="sora_tf", description=__doc__)
    ap.add_argument("--version", action="version", version=f"sora_tf {_version()}")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model, then evaluate it on its validation and test clips")
    _common_train(p)
    p.add_argument("--out", help="run directory (default runs/<model>-<time>; with --resume, the newest such run)")
    p.add_argument("--epochs", type=int, help="override the config's epochs")
    p.add_argument("--preset", choices=("default", "tiny"), help="config preset (tiny: seconds on a CPU)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set rnn_units=64 (repeatable; `models` lists the fields)")
    p.add_argument("--resume", action="store_true", help="continue --out (or the newest run) from its last epoch")
    p.add_argument("--strategy", choices=("auto", "default", "mirrored", "multiworker"), default="auto",
                   help="tf.distribute strategy; auto: multiworker when TF_CONFIG names a cluster, mirrored "
                        "with several GPUs, else default")

    p = sub.add_parser("cv", help="grouped k-fold cross-validation: one run per fold, cv.json with mean and std")
    _common_train(p)
    p.add_argument("--folds", type=int, default=5, help="number of folds (>= 2)")
    p.add_argument("--fold-seed", type=int, help="deal the folds with this seed (default: the config's seed), "
                                                "so that --set seed=K retrains the same folds")
    p.add_argument("--baseline", action="store_true",
                   help="also fit a logistic regression on 28 optical-flow statistics of each clip on the "
                        "same folds: the figure a model must beat (0.1-0.3 s a clip)")
    p.add_argument("--out", help="folder of the fold runs (default runs/cv-<model>-<time>); "
                                 "run again with the same --out to resume")
    p.add_argument("--preset", choices=("default", "tiny"), help="config preset (tiny: seconds on a CPU)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field in every fold's run (repeatable)")

    p = sub.add_parser("evaluate", help="metrics.json + plots for a run")
    p.add_argument("run", help="run directory")
    p.add_argument("--data", help="evaluate on all clips of this data instead of the run's validation and test clips")
    p.add_argument("--strict", action="store_true", help="an unusable video is an error, not a counted skip")

    p = sub.add_parser("predict", help="top classes for video files, or every video under folders")
    p.add_argument("--model", required=True,
                   help="run directory, SavedModel (or export/<model> for its newest version) or .tflite")
    p.add_argument("videos", nargs="+", help="video files, or folders searched for video files")
    p.add_argument("--top", type=int, default=3, help="how many classes to give per video (>= 1)")
    p.add_argument("--out", help="also write the predictions to this .csv or .json file")

    p = sub.add_parser("export", help="SavedModel for TF Serving + TFLite variants, with parity checks")
    p.add_argument("run", help="run directory")
    p.add_argument("--out", default="export", help="export root (default export/)")
    p.add_argument("--calibration-clips", type=int,
                   help="training clips that calibrate full-int8 quantisation (default: sora_cls 256, others 64)")
    p.add_argument("--parity-clips", type=int, help="held-out clips for the parity check (validation, or test where they trained; default all)")

    p = sub.add_parser("stream", help="classify a video or camera frame by frame with a streaming .tflite")
    p.add_argument("--model", required=True, help="stream_*.tflite written by export")
    p.add_argument("source", help="video file, or a camera index such as 0")
    p.add_argument("--every", type=int, help="feed one frame in N (default: the source's frame rate over the "
                                             "run's fps, as evaluation sampled; 1 without one)")
    p.add_argument("--window", type=int, help="restart the state every N frames fed (default T; 0: never)")
    p.add_argument("--out", help="write an annotated video here")
    p.add_argument("--threads", type=int, help="LiteRT threads")
    p.add_argument("--max-frames", type=int, help="stop after this many source frames")

    p = sub.add_parser("detect", help="detect and track people in a video or camera, frame by frame")
    p.add_argument("--model", required=True,
                   help="detection run directory, SavedModel (or export/<model>) or stream_*.tflite")
    p.add_argument("source", help="video file, or a camera index such as 0")
    p.add_argument("--out", help="write the video with boxes and track ids here (.mp4 or .avi)")
    p.add_argument("--mot", help="write the tracks here in the MOTChallenge format (frame,id,x,y,w,h,score,...)")
    p.add_argument("--min-score", type=float, default=0.3, help="lowest score drawn and written (0-1)")
    p.add_argument("--threads", type=int, help="LiteRT threads")
    p.add_argument("--max-frames", type=int, help="stop after this many frames")

    p = sub.add_parser("prepare", help="decode a video dataset once into sharded JPEG TFRecords (fast path)")
    p.add_argument("--data", required=True, help="class-per-folder directory or CSV manifest")
    p.add_argument("--out", required=True, help="output folder, new or empty (or prepared data, replaced whole); "
                                                "train with --data pointing at it")
    p.add_argument("--size", type=int, default=128, help="stored frame side in pixels (>= the model's)")
    p.add_argument("--quality", type=int, default=90, help="JPEG quality, 1-100")
    p.add_argument("--shard-clips", type=int, default=64, help="clips per shard")
    p.add_argument("--strict", action="store_true", help="an unusable video is an error, not a counted skip")
    p.add_argument("--runner", choices=("local", "beam"), default="local",
                   help="local: threads in this process; beam: an Apache Beam pipeline (the beam extra)")
    p.add_argument("--beam-args", default="", metavar="'--runner=...'",
                   help="Beam pipeline options in one string, after an = sign: --beam-args='--runner=FlinkRunner ...' (default: DirectRunner)")

    p = sub.add_parser("generate", help="write clips sampled from a generative model as video files")
    p.add_argument("--model", required=True, help="run directory or SavedModel export of sora_vaegan")
    p.add_argument("--class", dest="class_name", help="class to generate (default: every class)")
    p.add_argument("--n", type=int, default=8, help="clips per class")
    p.add_argument("--seed", type=int, default=0, help="the same seed draws the same clips")
    p.add_argument("--fps", type=int, default=12, help="frame rate of the written videos")
    p.add_argument("--out", required=True, help="output folder: <out>/<class>/*.mp4")

    p = sub.add_parser("anomaly", help="per-clip anomaly scores from a generative run, or from an embedding folder")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", help="run directory of sora_vaegan")
    which.add_argument("--index", help="embedding folder of normal clips: a clip's score is its distance "
                                       "to the k nearest of them")
    p.add_argument("videos", nargs="*", help="video files, or folders searched for video files")
    p.add_argument("--data", help="with --model, instead of videos: AUROC over every clip of this data the run "
                                  "did not train on (the run's classes normal, other classes anomalous)")
    p.add_argument("--embedder", action="append", default=[], metavar="MODEL",
                   help="with --data: also the AUROC of the kNN distance in this embedder's space (a run, "
                        "export, histogram, pixels or untrained:RUN; repeatable)")
    p.add_argument("--k", type=int, default=5, help="neighbours averaged by the kNN score")

    p = sub.add_parser("embed", help="embed every clip of a dataset into an embedding folder (adds new clips "
                                     "to an existing one)")
    p.add_argument("--model", required=True, help="run directory, SavedModel (or export/<model>), clip .tflite, "
                                                  "or a baseline: histogram, pixels, untrained:RUN")
    p.add_argument("--data", required=True, help="class-per-folder directory or CSV manifest")
    p.add_argument("--out", required=True, help="embedding folder (new, or one this model wrote: new clips added)")
    p.add_argument("--views", type=int, help="temporal views averaged per clip (default: the run's eval_views)")
    p.add_argument("--crops", type=int, help="spatial crops per view, 1 or 3 (default: the run's eval_crops)")
    p.add_argument("--strict", action="store_true", help="an unusable video is an error, not a counted skip")

    p = sub.add_parser("search", help="nearest clips of an embedding folder to videos, or to one of its clips")
    p.add_argument("--index", required=True, help="embedding folder written by `embed`")
    p.add_argument("videos", nargs="*", help="video files, or folders searched for video files")
    p.add_argument("--clip", help="instead of videos: a clip of the folder (itself left out)")
    p.add_argument("--k", type=int, default=5, help="neighbours per query")
    p.add_argument("--out", help="also write the results to this .json file")

    p = sub.add_parser("duplicates", help="near-duplicate pairs of an embedding folder, as a CSV")
    p.add_argument("--index", required=True, help="embedding folder written by `embed`")
    p.add_argument("--threshold", type=float, help="cosine similarity from which a pair is a duplicate "
                                                   "(default: the folder's, set by `embed` from copies of its clips)")
    p.add_argument("--out", help="CSV to write (default EMB_DIR/duplicates.csv)")

    p = sub.add_parser("map", help="2-D t-SNE map of an embedding folder, coloured by label, outliers marked")
    p.add_argument("--index", required=True, help="embedding folder written by `embed`")
    p.add_argument("--out", required=True, help="picture to write (.png, .pdf or .svg)")
    p.add_argument("--outliers", type=float, default=0.05, help="fraction of clips marked as outliers")

    p = sub.add_parser("retrieval", help="retrieval figures of a run's embedding beside baselines: "
                                         "RUN/retrieval.json")
    p.add_argument("run", help="run directory of a model with a clip embedding")
    p.add_argument("--part", choices=("val", "test"), help="the run's held-out clips used as queries "
                                                              "(default: val, or test where the validation clips trained)")
    p.add_argument("--k", type=int, default=5, help="neighbours for precision@k and recall@k")
    p.add_argument("--normal", action="append", metavar="CLASS",
                   help="a normal class for the anomaly AUROC (repeatable; the other classes are anomalous)")
    p.add_argument("--strict", action="store_true", help="an unusable video is an error, not a counted skip")

    p = sub.add_parser("make-data", help="build the generated default dataset")
    p.add_argument("--variant", choices=("tiny", "default"), default="default", help="dataset size")
    p.add_argument("--seed", type=int, default=0, help="the same seed builds the same videos")
    p.add_argument("--out", help="output directory (default datasets/generated/...)")

    p = sub.add_parser("models", help="list the zoo's models with their config fields and defaults")
    p.add_argument("name", nargs="?", help="one model only")
    return ap


def describe_models(name=None):
    """The zoo's models (every sora_tf/models/*.py that meets the contract), each with its task,
    the first line of its docstring and its config fields with their defaults."""
    import dataclasses
    import pkgutil

    from sora_tf import models

    names = [name] if name else sorted(m.name for m in pkgutil.iter_modules(models.__path__) if not m.ispkg)
    lines = []
    for model in names:
        try:
            module = models.get(model)
        except ValueError:
            if name:
                raise
            continue  # a shared module, not a model
        lines.append(f"{model} (task: {module.task}): {(module.__doc__ or '').strip().splitlines()[0]}")
        for field in dataclasses.fields(module.Config):
            lines.append(f"    {field.name} = {field.default!r}")
    return "\n".join(lines)


def main(argv=None):
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return _run(args)
    except (ValueError, OSError, FloatingPointError) as e:  # each names its input
        print(f"sora_tf {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"sora_tf {args.command}: interrupted", file=sys.stderr)
        return 130


def _run(args):
    if args.command == "models":
        print(describe_models(args.name))
    elif args.command == "make-data":
        from sora_tf.data import synthetic
        out = synthetic.generate(args.out, args.variant, args.seed) if args.out else \
            synthetic.ensure(args.variant, args.seed)
        print(out)
    elif args.command == "prepare":
        from sora_tf.atomic import check_replaceable
        from sora_tf.data.prepared import MANIFEST, prepare
        from sora_tf.data.sources import list_clips
        check_replaceable(args.out, MANIFEST, "prepared data")  # before the data is probed
        if args.runner == "beam":
            import shlex
            from sora_tf.data.prepared_beam import prepare_beam
            if args.strict:
                raise ValueError("--strict is for the local runner; the Beam pipeline counts unusable videos")
            print(prepare_beam(args.data, args.out, args.size, args.shard_clips, args.quality,
                               shlex.split(args.beam_args)))
            return 0
        if args.beam_args:
            raise ValueError("--beam-args needs --runner beam")
        print(prepare(list_clips(args.data, strict=args.strict), args.out, args.size, args.shard_clips,
                      args.quality))
    elif args.command == "train":
        from sora_tf.runs import run_summary
        from sora_tf.train.evaluate import describe, evaluate
        from sora_tf.train.run import train
        if args.epochs is not None and args.epochs < 1:
            raise ValueError(f"--epochs must be >= 1, got {args.epochs}")
        run = train(args.model, args.data, args.out, args.epochs, args.sets, args.preset,
                    args.resume, args.strict, strategy=args.strategy)
        if run is None:
            print("worker finished; the chief writes and evaluates the run")
            return 0
        print(describe(run, evaluate(run, strict=args.strict)))
        print(run_summary(run))
    elif args.command == "cv":
        from sora_tf.train.cv import cross_validate, describe
        print(describe(cross_validate(args.model, args.data, args.out, args.folds, args.sets, args.preset,
                                      args.strict, args.fold_seed, args.baseline)))
    elif args.command == "embed":
        from sora_tf.embedding.store import embed
        meta = embed(args.model, args.data, args.out, args.strict, args.views, args.crops)
        print(f"{args.out}: {meta['clips']} clips ({meta['embedded_now']} embedded now, {meta['reused']} kept, "
              f"{meta['dropped']} dropped, {meta['skipped']} skipped), {meta['dim']} dims, index {meta['index']}")
    elif args.command == "search":
        from sora_tf.atomic import save_json
        from sora_tf.data.sources import video_files
        from sora_tf.embedding.uses import search
        if bool(args.videos) == bool(args.clip):
            raise ValueError("give video files (or folders of them), or --clip, not both")
        videos = video_files(args.videos)
        if args.videos and not videos:
            raise ValueError(f"no video files in {', '.join(args.videos)}")
        results = search(args.index, videos, args.clip, args.k)
        if args.out:
            save_json(args.out, [{"query": q, "neighbours": r if not isinstance(r, str) else [],
                                  "error": r if isinstance(r, str) else None} for q, r in results])
        failed = 0
        for query, found in results:
            if isinstance(found, str):
                failed += 1
                print(f"{query}: error: {found}", file=sys.stderr)
                continue
            print(query)
            for rank, n in enumerate(found, 1):
                print(f"  {rank}. {n['similarity']:.4f}  {n['label']}  {n['path']}")
        return 1 if failed else 0
    elif args.command == "duplicates":
        import os
        from sora_tf.embedding.uses import duplicates
        out = args.out or os.path.join(args.index, "duplicates.csv")
        pairs, threshold = duplicates(args.index, out, args.threshold)
        print(f"{len(pairs)} pairs at cosine similarity >= {threshold:.4f}: {out}")
    elif args.command == "map":
        from sora_tf.embedding.uses import draw_map
        result = draw_map(args.index, args.out, args.outliers)
        print(f"{args.out}: {result['clips']} clips, {len(result['outliers'])} outliers marked")
    elif args.command == "retrieval":
        from sora_tf.embedding.measure import describe, measure
        if args.k < 1:
            raise ValueError(f"--k must be >= 1, got {args.k}")
        print(describe(measure(args.run, args.part, args.k, args.normal, strict=args.strict)))
    elif args.command == "evaluate":
        from sora_tf.train.evaluate import describe, evaluate
        print(describe(args.run, evaluate(args.run, args.data, args.strict)))
    elif args.command == "generate":
        from sora_tf.export.runtime import generate
        for path in generate(args.model, args.out, args.class_name, args.n, args.seed, args.fps):
            print(path)
    elif args.command == "anomaly":
        from sora_tf.data.sources import video_files
        from sora_tf.train.anomaly import anomaly_auroc, anomaly_scores
        if args.k < 1:
            raise ValueError(f"--k must be >= 1, got {args.k}")
        if args.data:
            if args.index:
                raise ValueError("--data measures a --model run; with --index, give videos to score")
            print(json.dumps(anomaly_auroc(args.model, args.data, args.embedder, args.k), indent=2))
            return 0
        videos = video_files(args.videos)
        if not videos:
            raise ValueError("give video files (or folders of them)" + ("" if args.index else ", or --data for an AUROC"))
        failed = 0
        if args.index:
            from sora_tf.embedding.uses import anomaly_scores as knn_anomaly
            for video, result in knn_anomaly(args.index, videos, args.k):
                failed += isinstance(result, str)
                print(f"{video}: error: {result}" if isinstance(result, str) else f"{video}: score {result:.5f}",
                      file=sys.stderr if isinstance(result, str) else sys.stdout)
            return 1 if failed else 0
        for video, result in anomaly_scores(args.model, videos):
            if isinstance(result, str):
                failed += 1
                print(f"{video}: error: {result}", file=sys.stderr)
            else:
                print(f"{video}: score {result['score']:.5f}  reconstruction {result['reconstruction']:.5f}"
                      f"  kl {result['kl']:.4f}  temporal {result['temporal']:.3f}")
        return 1 if failed else 0
    elif args.command == "predict":
        from sora_tf.data.sources import video_files
        from sora_tf.export.runtime import load_predictor, predict_videos, write_predictions
        if args.top < 1:
            raise ValueError(f"--top must be >= 1, got {args.top}")
        if args.out and not args.out.endswith((".csv", ".json")):
            raise ValueError(f"--out {args.out}: write predictions to a .csv or a .json file")
        videos = video_files(args.videos)
        if not videos:
            raise ValueError(f"no video files in {', '.join(args.videos)}")
        results = predict_videos(load_predictor(args.model), videos, args.top)
        if args.out:
            print(f"predictions written to {write_predictions(results, args.out)}", file=sys.stderr)
        failed = 0
        for video, result in results:
            if isinstance(result, str):
                failed += 1
                print(f"{video}: error: {result}", file=sys.stderr)
            else:
                print(f"{video}: " + ", ".join(f"{c} {p:.3f}" for c, p in result))
        return 1 if failed else 0
    elif args.command == "export":
        from sora_tf.export import parity
        from sora_tf.export.exporter import export_run
        for flag in ("calibration_clips", "parity_clips"):
            if getattr(args, flag) is not None and getattr(args, flag) < 1:
                raise ValueError(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
        result = export_run(args.run, args.out, args.calibration_clips, args.parity_clips)
        print(parity.table(result["parity"]))
        print(json.dumps({k: result[k] for k in ("saved_model", "tflite", "models_config")}, indent=2))
    elif args.command == "detect":
        from sora_tf.data.video import VideoError
        from sora_tf.export.detector import detect
        try:
            summary = detect(args.model, args.source, out=args.out, mot=args.mot, threads=args.threads,
                             max_frames=args.max_frames, min_score=args.min_score)
        except VideoError as e:
            print(f"sora_tf detect: error: {e}", file=sys.stderr)
            return 1
        print(json.dumps(summary, indent=2))
    elif args.command == "stream":
        from sora_tf.data.video import VideoError
        from sora_tf.export.stream import stream
        try:
            summary = stream(args.model, args.source, every=args.every, window=args.window, out=args.out,
                             threads=args.threads, max_frames=args.max_frames)
        except VideoError as e:
            print(f"sora_tf stream: error: {e}", file=sys.stderr)
            return 1
        print(json.dumps(summary, indent=2))
    return 0
