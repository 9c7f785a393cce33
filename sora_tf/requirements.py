"""`python -m sora_tf.requirements`: setup.cfg's requirements (with the test and beam extras) but
TensorFlow, one per line, for `make setup GPU=1`, which installs `tensorflow[and-cuda]` in its
place: the CPU and GPU builds are never installed over each other."""
import configparser
import os
import sys


def requirements(extras=("test", "beam")):
    config = configparser.ConfigParser()
    config.read(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "setup.cfg"))
    lines = config["options"]["install_requires"].splitlines()
    for extra in extras:
        lines += config["options.extras_require"][extra].splitlines()
    kept = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    return [r for r in kept if not r.split(";")[0].strip().startswith(("tensorflow==", "tensorflow-cpu"))]


if __name__ == "__main__":
    sys.stdout.write("\n".join(requirements()) + "\n")
