"""Optical flow and motion statistics in TensorFlow ops, and the clip and stream graphs of
`sora_cls`'s `recipe="motion"` built on them.

`lk_flow` is dense pyramidal Lucas-Kanade: Sobel gradients, a box window, a 2 x 2 solve per
pixel, and the second frame warped by the flow so far (bilinear gathers) on each iteration. It
uses only ops that TFLite has as builtins. The statistics are the 28 of `sora_tf.data.motion`
(what `cv --baseline` fits) and the share of motion in each of 8 directions, written as running
sums over the flows, so that a clip and a stream fed the same frames give the same numbers:
`MotionState.update` takes one flow at a time. (The 28 see how things move, not which way: on
300 generated clips of direction classes they read 0.36 in a logistic regression, 0.61 with
the 8 shares; on fight_surv 0.772 and 0.769.)
On fight_surv these statistics of this flow at 64 x 64 read 0.772 (ROC AUC 0.878) across six
fold deals in a logistic regression, Farneback's at 120 x 160 0.788 (0.865) (docs/sora_cls.md,
"Fifth study").
"""
import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops

NUM_STATS = 28 + 8
DAMPING = 1.0  # grey levels squared per pixel squared, added to the window's gradient moments
MOVING = 1.0 / 160  # flow (pixels) over frame width: below it a pixel counts as still
_SOBEL_X = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float32) / 8
_LUMA = np.array([0.299, 0.587, 0.114], np.float32).reshape(1, 1, 3, 1)
_BINOMIAL = np.outer(*[np.array([1, 4, 6, 4, 1], np.float32) / 16] * 2)


def _conv(x, kernel, stride=1):
    """x [N, H, W, 1] convolved with each [k, k] kernel of `kernel` [k, k, C] (reflected border)."""
    r = kernel.shape[0] // 2
    x = tf.pad(x, [[0, 0], [r, r], [r, r], [0, 0]], mode="REFLECT")
    return tf.nn.conv2d(x, tf.constant(kernel[:, :, None, :]), stride, "VALID")


def _box(x, window):
    """Mean over a window x window box of each channel, separably; at the border over the part
    of the box inside the frame."""
    x = tf.nn.avg_pool2d(x, [1, window], 1, "SAME")
    return tf.nn.avg_pool2d(x, [window, 1], 1, "SAME")


def _warp(image, flow):
    """image [N, H, W, 1] sampled at (x + u, y + v) bilinearly, coordinates clamped to the frame.
    (Four gathers of scalars: one gather of [N * H * W, 4] neighbourhoods took 3 times as long in
    TFLite.)"""
    n, h, w = tf.shape(image)[0], image.shape[1], image.shape[2]
    gy, gx = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij")
    x = tf.clip_by_value(gx + flow[..., 0], 0.0, w - 1.0)
    y = tf.clip_by_value(gy + flow[..., 1], 0.0, h - 1.0)
    x0, y0 = tf.floor(x), tf.floor(y)
    fx, fy = x - x0, y - y0
    x0, y0 = tf.cast(x0, tf.int32), tf.cast(y0, tf.int32)
    x1, y1 = tf.minimum(x0 + 1, w - 1), tf.minimum(y0 + 1, h - 1)
    flat = tf.reshape(image, [-1])
    base = (tf.range(n) * (h * w))[:, None, None]

    def at(yy, xx):
        return tf.gather(flat, base + yy * w + xx)
    top = at(y0, x0) * (1 - fx) + at(y0, x1) * fx
    bottom = at(y1, x0) * (1 - fx) + at(y1, x1) * fx
    return (top * (1 - fy) + bottom * fy)[..., None]


def lk_flow(a, b, window=9, levels=2, iterations=2):
    """Flow [N, H, W, 2] (u right, v down, in pixels) that carries grey frames a to b [N, H, W]
    (0-255). Coarse to fine over `levels` binomial halvings, `iterations` warped solves each."""
    pyramid = [(a[..., None], b[..., None])]
    for _ in range(levels - 1):
        pyramid.append(tuple(_conv(p, _BINOMIAL[:, :, None], 2) for p in pyramid[-1]))
    flow = None
    for first, second in reversed(pyramid):
        coarsest = flow is None  # where the flow starts at zero
        h, w = first.shape[1], first.shape[2]
        flow = (tf.zeros_like(tf.concat([first, first], -1)) if coarsest
                else 2.0 * tf.image.resize(flow, [h, w], "bilinear"))
        grad = _conv(first, np.stack([_SOBEL_X, _SOBEL_X.T], -1))
        ix, iy = grad[..., :1], grad[..., 1:]
        moments = _box(tf.concat([ix * ix, iy * iy, ix * iy], -1), window)
        # Damped (M + DAMPING I): where the texture has one direction (an edge, stripes) the flow
        # across it, not zero; where it has none, little.
        ixx, iyy, ixy = moments[..., 0] + DAMPING, moments[..., 1] + DAMPING, moments[..., 2]
        det = ixx * iyy - ixy * ixy
        for k in range(iterations):
            it = (second if coarsest and k == 0 else _warp(second, flow)) - first  # a zero flow warps nothing
            mismatch = _box(tf.concat([ix * it, iy * it], -1), window)
            bx, by = -mismatch[..., 0], -mismatch[..., 1]
            flow = flow + tf.stack([(iyy * bx - ixy * by) / det, (ixx * by - ixy * bx) / det], -1)
    return flow


def grey(frames, size):
    """Luma (BT.601, as OpenCV's RGB2GRAY) of RGB frames [N, S, S, 3] in 0-255, at size x size:
    larger frames are halved by 2 x 2 means while twice the size fits, then resized bilinearly
    (TFLite builtins both). The statistics need no more pixels (docs/sora_cls.md), and the flow's
    cost grows with them: 31 ms a frame at 172 x 172, against MoViNet-A0-Stream's 4.6."""
    g = tf.nn.conv2d(frames, _LUMA, 1, "VALID")  # a 1 x 1 convolution: fast in TFLite, unlike channel slices
    while g.shape[2] >= 2 * size:
        g = tf.nn.avg_pool2d(g, 2, 2, "VALID")
    if g.shape[2] != size:
        g = tf.image.resize(g, [size, size], "bilinear")
    return g[..., 0]


def _gradient(x, axis):
    """np.gradient of x [N, H, W] along axis 1 or 2: central inside, one-sided at the edges."""
    def take(start, stop):
        return x[:, start:stop] if axis == 1 else x[:, :, start:stop]
    return tf.concat([take(1, 2) - take(0, 1), (take(2, None) - take(0, -2)) / 2, take(-1, None) - take(-2, -1)],
                     axis=axis)


# Running sums, in this order: for each per-flow quantity (mean magnitude, its 90th percentile,
# the moving fraction) the sum, the sum of squares and the max; then the magnitude's sum over
# all pixels and over moving ones, the moving pixels, the jerk's mean over all pixels and its sum
# over pixels moving in the later flow, those pixels, |divergence| and |curl| over moving pixels,
# and the 8 direction bins weighted by magnitude.
SUMS = 9 + 8 + 8


class MotionState:
    """The statistics' running state for a batch of clips at S x S: maps [N, S, S, 5] (the last
    grey frame, the last flow u and v, how often each pixel's magnitude changed more than the
    frame's mean change, the summed magnitude), sums [N, SUMS] and flows [N, 1] (flows seen)."""

    def __init__(self, maps, sums, flows):
        self.maps, self.sums, self.flows = maps, sums, flows

    @staticmethod
    def zeros(batch, size):
        return MotionState(tf.zeros([batch, size, size, 5]), tf.zeros([batch, SUMS]), tf.zeros([batch, 1]))

    def update(self, flow, grey_frame):
        """The state after one more flow [N, S, S, 2] and the frame it ended at [N, S, S]."""
        width = flow.shape[2]
        u, v = flow[..., 0], flow[..., 1]
        m = tf.sqrt(u * u + v * v)
        moving = tf.cast(m > MOVING * width, tf.float32)
        last_u, last_v = self.maps[..., 1], self.maps[..., 2]
        last_m = tf.sqrt(last_u * last_u + last_v * last_v)
        later = tf.cast(self.flows >= 1, tf.float32)  # [N, 1]: a flow before this one
        mean_axes = [1, 2]
        pixels = float(flow.shape[1] * width)
        per = [tf.reduce_mean(m, mean_axes), _percentile90(m), tf.reduce_mean(moving, mean_axes)]
        per = tf.stack(per, -1)  # [N, 3]
        s = self.sums
        quantity = tf.concat([s[:, 0:3] + per, s[:, 3:6] + per * per, tf.maximum(s[:, 6:9], per)], -1)
        change = tf.abs(m - last_m)
        changed = tf.cast(change > tf.reduce_mean(change, mean_axes, keepdims=True), tf.float32)
        du, dv = u - last_u, v - last_v
        jerk = tf.sqrt(du * du + dv * dv)
        div = tf.abs(_gradient(u, 2) + _gradient(v, 1))
        curl = tf.abs(_gradient(v, 2) - _gradient(u, 1))
        angle = tf.atan2(v, u)
        bins = tf.cast(tf.clip_by_value(tf.floor((angle + np.pi) / (2 * np.pi / 8)), 0, 7), tf.int32)
        direction = tf.reduce_sum(tf.one_hot(bins, 8) * (m * moving)[..., None], mean_axes)
        total = lambda x: tf.reduce_sum(x, mean_axes)  # noqa: E731
        add = tf.stack([total(m), total(m * moving), total(moving),
                        later[:, 0] * total(jerk) / pixels, later[:, 0] * total(jerk * moving),
                        later[:, 0] * total(moving), total(div * moving), total(curl * moving)], -1)
        sums = tf.concat([quantity, s[:, 9:17] + add, s[:, 17:] + direction], -1)
        maps = tf.stack([grey_frame, u, v, self.maps[..., 3] + later[:, :, None] * changed,
                         self.maps[..., 4] + m], -1)
        return MotionState(maps, sums, self.flows + 1.0)

    def statistics(self):
        """[N, NUM_STATS]: the numbers of sora_tf.data.motion.statistics over the flows so far,
        then the share of the moving pixels' magnitude in each of 8 bins of atan2(v, u) over
        [-pi, pi] (the bins of the baseline's direction entropy; v points down)."""
        s, n = self.sums, tf.maximum(self.flows, 1.0)
        pixels = float(self.maps.shape[1] * self.maps.shape[2])
        mean = s[:, 0:3] / n
        std = tf.sqrt(tf.maximum(s[:, 3:6] / n - mean * mean, 0.0))
        out = []
        for k in range(3):
            out += [mean[:, k], std[:, k], s[:, 6 + k], std[:, k] / (mean[:, k] + 1e-3)]
        out += tf.unstack(change_histogram(self.maps[..., 3], tf.maximum(self.flows - 1.0, 1.0)), axis=-1)
        m_sum, m_moving, moving, jerk, jerk_moving, moving_later, div, curl = tf.unstack(s[:, 9:17], axis=-1)
        flows = n[:, 0]
        out.append((jerk / tf.maximum(flows - 1.0, 1.0)) / (m_sum / (pixels * flows) + 1e-3))
        mean_moving = m_moving / tf.maximum(moving, 1.0)
        out.append(tf.where(moving_later > 0, (jerk_moving / tf.maximum(moving_later, 1.0)) / (mean_moving + 1e-3), 0.0))
        p = s[:, 17:] / (tf.reduce_sum(s[:, 17:], -1, keepdims=True) + 1e-9)
        out.append(tf.where(moving > 0, -tf.reduce_sum(p * tf.math.log(p + 1e-9), -1), 0.0))
        energy = tf.reshape(self.maps[..., 4], [-1, int(pixels)])
        top = tf.math.top_k(energy, max(1, energy.shape[-1] // 20)).values
        out.append(tf.reduce_sum(top, -1) / (tf.reduce_sum(energy, -1) + 1e-6 * flows))
        out += [div / tf.maximum(moving, 1.0), curl / tf.maximum(moving, 1.0)]
        return tf.concat([tf.stack(out, -1), p], -1)  # then the direction shares


def change_histogram(counts, changes):
    """np.histogram(counts / changes, 10, (0, 1)) / pixels, per batch item, for pixel counts
    [N, H, W] out of `changes` [N, 1]. Compared as integers (count * 10 against bin * changes),
    so a fraction on a bin edge (7 / 14 = 0.5) falls in one bin however the graph is run: while
    this divided, Keras `predict` and eager calls binned such pixels apart on real clips."""
    tenfold = counts * 10.0
    changes = changes[:, :, None]
    bins = []
    for k in range(10):
        inside = tenfold >= k * changes
        inside = inside & (tenfold < (k + 1) * changes) if k < 9 else inside
        bins.append(tf.reduce_mean(tf.cast(inside, tf.float32), [1, 2]))
    return tf.stack(bins, -1)


def _percentile90(m):
    """np.percentile(m over H x W, 90) (linear) per batch item, from a top_k."""
    count = m.shape[1] * m.shape[2]
    flat = tf.reshape(m, [-1, count])
    position = 0.9 * (count - 1)
    low = int(position)
    top = tf.math.top_k(flat, count - low).values  # descending: [-1] is the low-th smallest
    frac = position - low
    return top[:, -1] * (1 - frac) + top[:, -2 if count - low > 1 else -1] * frac


def clip_statistics(frames, size, window=9, levels=2, iterations=2):
    """[B, NUM_STATS] of RGB frames [B, T, S, S, 3] in 0-255, at size x size (`grey`): all T - 1
    flows in one batch, then the running sums over them in order, as a stream of the same frames
    would add them."""
    t, s = frames.shape[1], frames.shape[2]
    g = tf.reshape(grey(tf.reshape(frames, [-1, s, s, 3]), size), [-1, t, size, size])
    b = tf.shape(g)[0]
    a = tf.reshape(g[:, :-1], [-1, size, size])
    z = tf.reshape(g[:, 1:], [-1, size, size])
    flows = tf.reshape(lk_flow(a, z, window, levels, iterations), [b, t - 1, size, size, 2])
    state = MotionState.zeros(b, size)
    for k in range(t - 1):
        state = state.update(flows[:, k], g[:, k + 1])
    return state.statistics()


class _FlowLayer(layers.Layer):
    """A float32 layer with the motion recipe's flow settings (no weights)."""

    def __init__(self, size=64, window=9, levels=2, iterations=2, **kwargs):
        super().__init__(dtype="float32", **{k: v for k, v in kwargs.items() if k != "dtype"})
        self.size, self.window, self.levels, self.iterations = size, window, levels, iterations

    def get_config(self):
        return {**super().get_config(), "size": self.size, "window": self.window, "levels": self.levels,
                "iterations": self.iterations}


@keras.saving.register_keras_serializable("sora_tf")
class MotionStatistics(_FlowLayer):
    """RGB frames [B, T, S, S, 3] in 0-255 -> [B, 36] statistics of their optical flow
    (`clip_statistics`); nothing to train, no gradient through it."""

    def call(self, frames):
        return ops.stop_gradient(clip_statistics(frames, self.size, self.window, self.levels, self.iterations))

    def compute_output_shape(self, shape):
        return (shape[0], NUM_STATS)


@keras.saving.register_keras_serializable("sora_tf")
class MotionStep(_FlowLayer):
    """One step of the motion recipe's stream: frame [B, S, S, 3] and the state (the
    `MotionState` tensors, and `started` [B, 1], 0 before the first frame) -> (statistics
    [B, 36], new maps, sums, flows). The first frame is only kept, as a clip's first is."""

    def call(self, frame, maps, sums, flows, started):
        g = grey(frame, self.size)
        moved = MotionState(maps, sums, flows).update(
            lk_flow(maps[..., 0], g, self.window, self.levels, self.iterations), g)
        on = started > 0.5
        kept = ops.concatenate([g[..., None], ops.zeros_like(maps[..., 1:])], -1)
        state = MotionState(ops.where(on[:, :, None, None], moved.maps, kept),
                            ops.where(on, moved.sums, sums), ops.where(on, moved.flows, flows))
        return state.statistics(), state.maps, state.sums, state.flows


# === The motion recipe's graphs (sora_cls, `recipe="motion"`) ===
def classifier(frames, config):
    """(probabilities, embedding) of clip frames (a Keras input [B, T, S, S, 3] in 0-255): the
    statistics, standardised by a BatchNormalization ("embedding"), and a linear layer ("logits")."""
    stats = MotionStatistics(config.flow_size, config.motion_window, config.motion_levels,
                             config.motion_iterations, name="motion_statistics")
    # Momentum 0.9: at 0.99 the moving statistics still weigh their start by 0.25 after a
    # fight_surv run's 140 steps, and the model failed (0.49, docs/sora_cls.md).
    embedding = layers.BatchNormalization(momentum=0.9, name="embedding")(
        stats(layers.Identity(name="to_float", dtype="float32")(frames)))
    probabilities = layers.Softmax(name="probabilities", dtype="float32")(
        layers.Dense(config.num_classes, name="logits")(embedding))
    return probabilities, embedding


def state_shapes(size):
    """{name: shape without batch} of the stream's state: `MotionState` at size x size, and
    `state_started` (0 before the first frame). All-zero is the start state."""
    return {"state_maps": (size, size, 5), "state_sums": (SUMS,), "state_flows": (1,), "state_started": (1,)}


def stream_model(clip_model, batch=None):
    """The stream of a `classifier` clip model: each frame adds its flow from the last one to the
    running sums, and the statistics so far go through the clip model's layers."""
    config = clip_model.config
    s = config.image_size
    frame = keras.Input((s, s, 3), batch_size=batch, name="frame")
    state = {k: keras.Input(v, batch_size=batch, name=k) for k, v in state_shapes(config.flow_size).items()}
    step = MotionStep(config.flow_size, config.motion_window, config.motion_levels, config.motion_iterations,
                      name="motion_step")
    stats, maps, sums, flows = step(layers.Identity(dtype="float32")(frame), state["state_maps"],
                                    state["state_sums"], state["state_flows"], state["state_started"])
    embedding = clip_model.get_layer("embedding")(stats)
    probabilities = ops.softmax(clip_model.get_layer("logits")(embedding))
    new_state = {"state_maps": maps, "state_sums": sums, "state_flows": flows,
                 "state_started": ops.ones_like(state["state_started"])}
    return keras.Model({"frame": frame, **state}, {"probabilities": probabilities, "embedding": embedding, **new_state},
                       name=f"{clip_model.name}_stream")
