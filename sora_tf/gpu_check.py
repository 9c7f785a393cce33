"""`make gpu-check` (`python -m sora_tf.gpu_check [--write]`): what TensorFlow sees, where the
work runs, and a sora_cls training step and an input pass timed on the GPU against the CPU.

Placement, as the README says it: video decoding runs on the CPU (OpenCV inside
`tf.numpy_function`, which TensorFlow always places there); augmentation is part of the model's
graph and runs with the model, on the GPU when there is one. `--write` adds the figures, with
the card's name, to BENCHMARKS.md and benchmarks.json.
"""
import argparse
import json
import time

import numpy as np


def _devices(tf):
    gpus = tf.config.list_physical_devices("GPU")
    names = [tf.config.experimental.get_device_details(g).get("device_name", g.name) for g in gpus]
    build = tf.sysconfig.get_build_info()
    return {"tensorflow": tf.__version__, "built_with_cuda": bool(build.get("is_cuda_build")),
            "cuda": build.get("cuda_version"), "cudnn": build.get("cudnn_version"),
            "gpus": names, "cpus": len(tf.config.list_physical_devices("CPU"))}


def _step_ms(device, config, batch, steps):
    """Median ms of one training step of sora_cls's trainer, built and run on `device`."""
    import tensorflow as tf

    from sora_tf.models import sora_cls
    from sora_tf.train.classify import trainer

    with tf.device(device):
        fitted = trainer(sora_cls.build(config), config, steps)
        clips, labels = batch
        fitted.train_on_batch(clips, labels)  # traces
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            fitted.train_on_batch(clips, labels)
            times.append(time.perf_counter() - t0)
        placed = fitted.trainable_weights[0].value.device
        augmented = fitted.get_layer("augment")(tf.constant(clips[:1]), training=True).device
    return float(np.median(times)) * 1e3, placed, augmented


def _input_pass(data, config):
    """Seconds for one pass over the tiny data's clips, and the device the frames come out on."""
    from sora_tf.data.pipeline import dataset_for
    from sora_tf.data.sources import list_clips

    listing = list_clips(data)
    ds = dataset_for(listing, clip_len=config.num_frames, size=(config.image_size,) * 2, training=False,
                     batch_size=config.batch_size)
    t0 = time.perf_counter()
    device = None
    for batch in ds:
        device = batch["frames"].device
    return time.perf_counter() - t0, device, len(listing.paths)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="sora_tf.gpu_check", description=__doc__)
    ap.add_argument("--steps", type=int, default=20, help="timed training steps per device")
    ap.add_argument("--write", action="store_true", help="add the figures to BENCHMARKS.md and benchmarks.json")
    args = ap.parse_args(argv)
    import tensorflow as tf

    from sora_tf.data import synthetic
    from sora_tf.models import sora_cls

    info = _devices(tf)
    print(json.dumps(info, indent=2))
    config = sora_cls.Config()
    rng = np.random.default_rng(0)
    batch = (rng.integers(0, 256, (config.batch_size, config.num_frames, config.image_size, config.image_size, 3),
                          dtype=np.uint8), rng.integers(0, config.num_classes, config.batch_size))
    devices = ["/CPU:0"] + (["/GPU:0"] if info["gpus"] else [])
    rows = []
    for device in devices:
        ms, placed, augmented = _step_ms(device, config, batch, args.steps)
        rows.append({"device": info["gpus"][0] if "GPU" in device else "CPU", "figure": "sora_cls training step",
                     "ms": ms, "weights_on": placed, "augmentation_on": augmented,
                     "command": "make gpu-check"})
    seconds, frames_on, clips = _input_pass(synthetic.ensure("tiny"), config)
    rows.append({"device": "CPU (decoding)", "figure": f"input pass, {clips} tiny clips", "ms": seconds * 1e3,
                 "weights_on": "", "augmentation_on": "", "frames_on": frames_on, "command": "make gpu-check"})
    if len(rows) == 3:
        rows[1]["speedup_vs_cpu"] = rows[0]["ms"] / rows[1]["ms"]
    for row in rows:
        print(json.dumps({k: v for k, v in row.items() if k != "command"}))
    problems = [r for r in rows[:-1] if "GPU" in r["device"] and "GPU" not in (r["weights_on"] + r["augmentation_on"])]
    if not info["gpus"]:
        print("no GPU visible to TensorFlow: CPU figures only (a GPU needs `make setup GPU=1` and a CUDA driver)")
    elif problems:
        print("placement differs from the README: the model or augmentation is not on the GPU")
        return 1
    else:
        print("placement as the README says: model and augmentation on the GPU, decoding on the CPU")
    if args.write and info["gpus"]:
        from sora_tf.bench.report import write_reports
        write_reports({f"GPU check ({info['gpus'][0]})": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
