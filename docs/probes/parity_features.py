"""A probe, not part of the package: which of a motion-recipe run's statistics differ between
Keras (`model.predict`) and its exported float32 TFLite file, on the run's test clips
(docs/sora_cls.md, "Sixth study").

    python docs/probes/parity_features.py RUN export/sora_cls/tflite/VERSION/float32.tflite
"""
import argparse

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from sora_tf.data.motion import NAMES
from sora_tf.runs import load_clips, load_run, source_listing, split_part


def main():
    p = argparse.ArgumentParser()
    p.add_argument("run")
    p.add_argument("tflite")
    args = p.parse_args()
    model, config, classes, info = load_run(args.run)
    clips, _ = load_clips(split_part(args.run, source_listing(classes, info), "test", info["data"]), config)
    want = np.asarray(model.predict(clips, batch_size=8, verbose=0)["embedding"])
    interpreter = Interpreter(args.tflite)
    interpreter.allocate_tensors()
    given = interpreter.get_input_details()[0]
    got = []
    for clip in clips:
        interpreter.set_tensor(given["index"], clip[None].astype(given["dtype"]))
        interpreter.invoke()
        outputs = [interpreter.get_tensor(o["index"])[0] for o in interpreter.get_output_details()]
        got.append(next(o for o in outputs if o.shape == want.shape[1:]))
    diff = np.abs(np.stack(got) - want)
    names = list(NAMES) + [f"direction_{i}" for i in range(8)]
    for j in np.argsort(-diff.max(0))[:8]:
        print(f"{j:2d} {names[j]:14s} largest difference {diff[:, j].max():.2e}, "
              f"clips over 1e-4: {int((diff[:, j] > 1e-4).sum())} of {len(clips)}")


if __name__ == "__main__":
    main()
