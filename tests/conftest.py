import csv
import os

import pytest

from sora_tf.data import synthetic

SHARED_DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")


# The start of a script run in a fresh interpreter in which sora_tf cannot be imported: what
# TF Serving has (a SavedModel must not need our code).
WITHOUT_SORA_TF = r"""
import importlib.abc, json, sys


class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "sora_tf":
            raise ImportError("sora_tf is blocked in this process")


sys.meta_path.insert(0, Block())
"""


def shared(*parts):
    """Path under ../shared/data, or skip the test with the reason when it is absent."""
    path = os.path.join(SHARED_DATA, *parts)
    if not os.path.exists(path):
        pytest.skip(f"{path} is absent (../shared/data is not part of a fresh clone)")
    return path


def history_epochs(run):
    """Epoch numbers recorded in a run's history.csv."""
    with open(os.path.join(run, "history.csv")) as f:
        return [int(r["epoch"]) for r in csv.DictReader(f)]


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    return synthetic.generate(str(tmp_path_factory.mktemp("data") / "tiny"), "tiny", seed=0)


@pytest.fixture(scope="session")
def tiny_run(tiny_data, tmp_path_factory):
    from sora_tf.train.run import train

    return train("sora_cls", tiny_data, str(tmp_path_factory.mktemp("runs") / "tiny"),
                 epochs=2, preset="tiny", verbose=0)
