# Prototype (not committed): the 28 statistics of sora_tf.data.motion on grey differences, in TF ops.
import keras
from keras import layers, ops
import tensorflow as tf


def _gradient(x, axis):
    """np.gradient along `axis` (central inside, one-sided at the edges)."""
    n = x.shape[axis]
    first = tf.gather(x, [1], axis=axis) - tf.gather(x, [0], axis=axis)
    last = tf.gather(x, [n - 1], axis=axis) - tf.gather(x, [n - 2], axis=axis)
    inner = (tf.gather(x, tf.range(2, n), axis=axis) - tf.gather(x, tf.range(0, n - 2), axis=axis)) / 2
    return tf.concat([first, inner, last], axis=axis)


def _percentile(v, q):
    """np.percentile (linear) of v [..., N] over the last axis."""
    s = tf.sort(v, axis=-1)
    n = v.shape[-1]
    pos = q / 100 * (n - 1)
    lo, hi = int(pos), min(int(pos) + 1, n - 1)
    frac = pos - int(pos)
    return s[..., lo] * (1 - frac) + s[..., hi] * frac


def _masked_mean(v, mask):
    mask = tf.cast(mask, v.dtype)
    return tf.reduce_sum(v * mask, axis=[1, 2, 3]) / tf.maximum(tf.reduce_sum(mask, axis=[1, 2, 3]), 1.0)


def statistics(grey):
    """grey [B, T, H, W] float grey levels (0-255) -> [B, 28], as sora_tf.data.motion.statistics
    of the flow (difference / 8, 0)."""
    d = (grey[:, 1:] - grey[:, :-1]) / 8.0
    m = tf.abs(d)
    b, t = tf.shape(m)[0], m.shape[1]
    hw = m.shape[2] * m.shape[3]
    moving = m > 1.0
    flat = tf.reshape(m, [b, t, hw])
    out = []
    for per in (tf.reduce_mean(flat, -1), _percentile(flat, 90.0), tf.reduce_mean(tf.cast(moving, tf.float32), [2, 3])):
        mean = tf.reduce_mean(per, 1)
        std = tf.math.reduce_std(per, 1)
        out += [mean, std, tf.reduce_max(per, 1), std / (mean + 1e-3)]
    change = tf.abs(m[:, 1:] - m[:, :-1])
    changed = tf.reduce_mean(tf.cast(change > tf.reduce_mean(change, [2, 3], keepdims=True), tf.float32), 1)
    cf = tf.reshape(changed, [b, hw])
    for i in range(10):
        lo, hi = i / 10, (i + 1) / 10
        inside = (cf >= lo) & ((cf < hi) if i < 9 else (cf <= hi))
        out.append(tf.reduce_mean(tf.cast(inside, tf.float32), -1))
    jerk = tf.abs(d[:, 1:] - d[:, :-1])
    mean_m = tf.reduce_mean(m, [1, 2, 3])
    out.append(tf.reduce_mean(jerk, [1, 2, 3]) / (mean_m + 1e-3))
    any_moving = tf.reduce_any(moving[:, 1:], [1, 2, 3])
    jm = _masked_mean(jerk, moving[:, 1:]) / (_masked_mean(m, moving) + 1e-3)
    out.append(tf.where(any_moving, jm, 0.0))
    # directions of (d, 0): angle 0 for d > 0, pi for d < 0 (bins 4 and 7 of 8 over [-pi, pi])
    pos = tf.reduce_sum(tf.where(moving & (d > 0), m, 0.0), [1, 2, 3])
    neg = tf.reduce_sum(tf.where(moving & (d < 0), m, 0.0), [1, 2, 3])
    tot = pos + neg + 1e-9
    p, q = pos / tot, neg / tot
    ent = -(p * tf.math.log(p + 1e-9) + q * tf.math.log(q + 1e-9))
    out.append(tf.where(tf.reduce_any(moving, [1, 2, 3]), ent, 0.0))
    energy = tf.reshape(tf.reduce_mean(m, 1), [b, hw])
    k = max(1, energy.shape[-1] // 20)
    out.append(tf.reduce_sum(tf.math.top_k(energy, k).values, -1) / (tf.reduce_sum(energy, -1) + 1e-6))
    div = tf.abs(_gradient(d, 3))
    curl = tf.abs(_gradient(d, 2))
    anym = tf.reduce_any(moving, [1, 2, 3])
    out.append(tf.where(anym, _masked_mean(div, moving), 0.0))
    out.append(tf.where(anym, _masked_mean(curl, moving), 0.0))
    return tf.stack(out, -1)
