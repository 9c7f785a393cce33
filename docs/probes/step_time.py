"""A probe, not part of the package: the default sora_cls training step with and without
`normal_flow` (docs/sora_cls.md, "Eighth study"), one cached batch of 16 clips, timed in
interleaved rounds so that the machine's load falls on both alike; the ratio is the figure.

    python docs/probes/step_time.py
"""
import dataclasses
import time

import keras
import numpy as np

from sora_tf.models import sora_cls


def main(rounds=5, steps=4):
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (16, 16, 64, 64, 3)).astype("float32"), rng.integers(0, 7, 16)
    models = {}
    for flow in (False, True):
        net = sora_cls.build(dataclasses.replace(sora_cls.Config(), normal_flow=flow))
        model = keras.Model(net.input, net.output["probabilities"])
        model.compile("adam", "sparse_categorical_crossentropy")
        model.train_on_batch(x, y)  # traced and warm before the clock starts
        models[flow] = model
    times = {flow: [] for flow in models}
    for _ in range(rounds):
        for flow, model in models.items():
            start = time.perf_counter()
            for _ in range(steps):
                model.train_on_batch(x, y)
            times[flow].append((time.perf_counter() - start) / steps)
    without, with_flow = np.asarray(times[False]), np.asarray(times[True])
    print(f"ms a step: without normal flow {1e3 * np.median(without):.0f}, with {1e3 * np.median(with_flow):.0f}; "
          f"ratio (median of {rounds} rounds) {np.median(with_flow / without):.3f}")


if __name__ == "__main__":
    main()
