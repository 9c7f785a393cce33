"""The dtype policy models are built under: float32, or 16-bit compute for `mixed_precision`.

Shared by training (a run's models), export (a float32 copy of a mixed run) and the bench.
"""
import contextlib

import keras


def mixed_policy():
    """The 16-bit policy for this machine: mixed_float16 on a GPU, mixed_bfloat16 on a CPU."""
    import tensorflow as tf

    return "mixed_float16" if tf.config.list_physical_devices("GPU") else "mixed_bfloat16"


@contextlib.contextmanager
def computing(config):
    """The Keras dtype policy of a run for the models built inside: `mixed_policy()` when
    `config.mixed_precision`, else float32; the previous policy is restored after."""
    before = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy(mixed_policy() if getattr(config, "mixed_precision", False)
                                            else "float32")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(before)
