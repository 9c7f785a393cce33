"""`python -m sora_tf` (also `sora-tf`): the command line only parses and wires; work lives in the library."""
import argparse
import json
import logging
import sys


def _common_train(p):
    p.add_argument("--model", default="sora_cls", help="model name: sora_tf/models/<name>.py")
    p.add_argument("--data", help="class-per-folder directory or CSV manifest (path,label); "
                                  "default: the generated dataset, built on first use")
    p.add_argument("--strict", action="store_true", help="an unusable video is an error, not a skip")


def parser():
    ap = argparse.ArgumentParser(prog="sora_tf", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model, then evaluate it on the validation split")
    _common_train(p)
    p.add_argument("--out", help="run directory (default runs/<model>-<time>)")
    p.add_argument("--epochs", type=int, help="override the config's epochs")
    p.add_argument("--preset", choices=("default", "tiny"), help="config preset (tiny: seconds on a CPU)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set rnn_units=64 (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue --out from its last epoch")

    p = sub.add_parser("evaluate", help="metrics.json + plots for a run")
    p.add_argument("run", help="run directory")
    p.add_argument("--data", help="evaluate on all clips of this data instead of the validation split")
    p.add_argument("--strict", action="store_true")

    p = sub.add_parser("predict", help="top classes for video files")
    p.add_argument("--model", required=True, dest="run", help="run directory")
    p.add_argument("videos", nargs="+")
    p.add_argument("--top", type=int, default=3)

    p = sub.add_parser("make-data", help="build the generated default dataset")
    p.add_argument("--variant", choices=("tiny", "default"), default="default")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="output directory (default datasets/generated/...)")
    return ap


def main(argv=None):
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return _run(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"sora_tf {args.command}: error: {e}", file=sys.stderr)
        return 2


def _run(args):
    if args.command == "make-data":
        from sora_tf.data import synthetic
        out = synthetic.generate(args.out, args.variant, args.seed) if args.out else \
            synthetic.ensure(args.variant, args.seed)
        print(out)
    elif args.command == "train":
        from sora_tf.train.evaluate import evaluate
        from sora_tf.train.run import run_summary, train
        run = train(args.model, args.data, args.out, args.epochs, args.sets, args.preset,
                    args.resume, args.strict)
        metrics = evaluate(run, strict=args.strict)
        print(f"validation accuracy {metrics['accuracy']:.4f}  macro-F1 {metrics['macro_f1']:.4f}")
        print(run_summary(run))
    elif args.command == "evaluate":
        from sora_tf.train.evaluate import evaluate
        metrics = evaluate(args.run, args.data, args.strict)
        print(json.dumps({k: metrics[k] for k in ("accuracy", "macro_f1", "num_clips")}, indent=2))
    elif args.command == "predict":
        from sora_tf.train.evaluate import predict
        failed = 0
        for video, result in predict(args.run, args.videos, args.top):
            if isinstance(result, str):
                failed += 1
                print(f"{video}: error: {result}", file=sys.stderr)
            else:
                print(f"{video}: " + ", ".join(f"{c} {p:.3f}" for c, p in result))
        return 1 if failed else 0
    return 0
