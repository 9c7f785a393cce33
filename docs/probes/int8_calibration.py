"""A probe, not part of the package: how many training clips int8 calibration needs
(docs/sora_cls.md, "Ninth study"). Exports only the int8 files of RUN, calibrated on each N,
into a temporary folder, and prints each file's top-1 agreement with Keras and its accuracy on
the run's held-out clips.

    python docs/probes/int8_calibration.py RUN 64 256
"""
import sys
import tempfile

from sora_tf.export.exporter import export_run


def main(run, counts):
    for n in counts:
        with tempfile.TemporaryDirectory() as root:
            result = export_run(run, root, calibration_clips=n, variants=("int8",))
        for row in result["parity"]:
            if "int8" in row["artifact"]:
                print(f"{n} clips: {row['artifact']} agreement {row['top1_agreement']:.4f} "
                      f"accuracy {row['accuracy']:.4f}")


if __name__ == "__main__":
    main(sys.argv[1], [int(n) for n in sys.argv[2:]] or [64, 256])
