"""The training step of sora_cls's default config: real input against no input cost."""
import time

from sora_tf.bench.report import COMMAND


def bench_train_step(data, steps=20):
    """sora_cls default training step, clips/s: real input (tf.data, decoding) vs one cached
    in-memory batch repeated. Their ratio says whether training is input-bound."""
    import tensorflow as tf

    from sora_tf.data.pipeline import make_dataset, supervised
    from sora_tf.data.sources import list_clips
    from sora_tf.models import sora_cls
    from sora_tf.train.classify import trainer

    listing = list_clips(data)
    config = sora_cls.Config(num_classes=len(listing.classes))

    def videos(cache):
        return supervised(make_dataset(
            listing.paths, listing.labels, listing.counts, clip_len=config.num_frames,
            size=(config.image_size,) * 2, training=True, batch_size=config.batch_size,
            stride_range=config.stride_range, cache=cache)).repeat()

    ds, in_memory = videos(False), videos(True)
    fitted = trainer(sora_cls.build(config), config, steps)
    cached = tf.data.Dataset.from_tensors(next(iter(ds))).repeat()
    epoch = len(listing.paths) // config.batch_size
    rows = []
    for name, source, warm in (("tf.data decoding video files every step", ds, 3),
                               ("tf.data, decoded videos kept in memory (epochs after the first)",
                                in_memory, epoch),
                               ("one cached batch (no input cost)", cached, 3)):
        fitted.fit(source, steps_per_epoch=warm, epochs=1, verbose=0)
        t0 = time.perf_counter()
        fitted.fit(source, steps_per_epoch=steps, epochs=1, verbose=0)
        seconds = time.perf_counter() - t0
        rows.append({"input": name, "clips_per_s": steps * config.batch_size / seconds,
                     "ms_per_step": seconds / steps * 1e3, "command": f"{COMMAND} --only train --data {data}"})
    for row in rows[:2]:
        row["vs_no_input_cost"] = row["clips_per_s"] / rows[2]["clips_per_s"]
    return rows


def bench_precision(steps=5, rounds=8):
    """sora_cls default training step on one in-memory batch (no input cost): float32 (the
    baseline), `mixed_precision` (mixed_bfloat16 on a CPU, mixed_float16 on a GPU) and
    `jit_compile` (XLA; the augmentation then runs in tf.data, outside the timed step), each
    built and timed in interleaved rounds in this process; the ratio is the median of per-round
    ratios to the baseline."""
    import numpy as np
    import tensorflow as tf

    from sora_tf.config import override
    from sora_tf.models import sora_cls
    from sora_tf.train.classify import augmenter, trainer
    from sora_tf.models.precision import computing, mixed_policy

    base = sora_cls.Config()
    variants = {"float32 (default)": [], f"mixed_precision ({mixed_policy()})": ["mixed_precision=true"],
                "jit_compile (XLA)": ["jit_compile=true"]}
    rng = np.random.default_rng(0)
    clips = rng.integers(0, 256, (base.batch_size, base.num_frames, base.image_size, base.image_size, 3), np.uint8)
    labels = rng.integers(0, base.num_classes, base.batch_size)
    fitted = {}
    for name, sets in variants.items():
        config = override(base, sets)
        with computing(config):
            model = trainer(sora_cls.build(config), config, steps)
        x = augmenter(config)(tf.constant(clips), training=True) if config.jit_compile else clips
        batch = tf.data.Dataset.from_tensors((x, labels)).repeat()
        model.fit(batch, steps_per_epoch=3, epochs=1, verbose=0)  # traces (and compiles)
        fitted[name] = (model, batch)
    times = {name: [] for name in variants}
    for _ in range(rounds):
        for name, (model, batch) in fitted.items():
            t0 = time.perf_counter()
            model.fit(batch, steps_per_epoch=steps, epochs=1, verbose=0)
            times[name].append((time.perf_counter() - t0) / steps * 1e3)
    baseline = times["float32 (default)"]
    return [{"variant": name, "ms_per_step": float(np.median(ms)),
             "speedup_vs_float32": float(np.median([b / m for b, m in zip(baseline, ms)])),
             "command": f"{COMMAND} --only precision"} for name, ms in times.items()]
