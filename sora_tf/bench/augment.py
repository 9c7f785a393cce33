"""Clip augmentation: the fused in-graph op against the Keras image-layer chain it replaced."""
from sora_tf.bench.report import COMMAND, timeit


def bench_augment(repeat=10):
    """Clip augmentation per batch of 16 clips x 16 frames x 64x64: fused ops vs the Keras
    image-layer chain it replaced (baseline, rebuilt here with the same settings)."""
    import tensorflow as tf
    from keras import layers

    from sora_tf.data.augment import ClipAugment

    clips = tf.random.uniform((16, 16, 64, 64, 3), 0, 255)
    fused = ClipAugment(zoom=0.1, translate=0.05, rotation_deg=3, flip=False, brightness=0.15,
                        contrast=0.15, saturation=0.2, hue=0.0, noise_std=2.0, seed=0)
    geometry = [layers.RandomZoom((-0.1, 0.0), fill_mode="reflect", seed=0),
                layers.RandomTranslation(0.05, 0.05, fill_mode="reflect", seed=0),
                layers.RandomRotation(3 / 360, fill_mode="reflect", seed=0)]
    colour = layers.RandomColorJitter(value_range=(0, 255), brightness_factor=0.15,
                                      contrast_factor=0.15, saturation_factor=(0.4, 0.6), seed=0)
    noise = layers.GaussianNoise(2 / 255, seed=0)

    def chain(x):
        b, t, h, w, c = x.shape
        y = tf.reshape(tf.transpose(x, (0, 2, 3, 1, 4)), (b, h, w, t * c))
        for layer in geometry:
            y = layer(y, training=True)
        y = tf.transpose(tf.reshape(y, (b, h, w, t, c)), (0, 3, 1, 2, 4))
        y = tf.reshape(colour(tf.reshape(y, (b, t * h, w, c)), training=True), (b, t, h, w, c))
        return tf.clip_by_value(noise(y / 255, training=True) * 255, 0, 255)

    run_chain = tf.function(chain)
    run_fused = tf.function(lambda x: fused(x, training=True))
    base, _ = timeit(lambda: run_chain(clips).numpy(), repeat)
    ours, _ = timeit(lambda: run_fused(clips).numpy(), repeat)
    return [{"figure": "clip augmentation, 16x16x64x64x3 batch", "baseline": "Keras image-layer chain",
             "baseline_ms": base * 1e3, "ours_ms": ours * 1e3, "speedup": base / ours,
             "command": f"{COMMAND} --only augment"}]
