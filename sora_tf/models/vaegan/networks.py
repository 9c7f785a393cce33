"""sora_vaegan's three networks: encoder, decoder and discriminator, each a named keras.Model."""
import keras
import numpy as np
from keras import layers, ops

from sora_tf.models.blocks import FrameDiff, FrameTimeDistributed, frame_cnn, pixel_normalization, upsampling_cnn
from sora_tf.models.vaegan.layers import CameraShifts, ShiftFrames

SHIFT_SD = 0.05  # px: the camera shift's posterior spread (it is measured; see CameraShifts)


def build_encoder(config):
    t, s = config.num_frames, config.image_size
    # === Layers ===
    normalize = pixel_normalization(config.pixel_mean, config.pixel_std)
    cnn = frame_cnn((s, s, 6), config.enc_widths, config.enc_features)
    lstm = layers.LSTM(config.cell_units, unroll=config.unroll, name="lstm")
    content = keras.Sequential([keras.Input((s, s, 4))] + [
        layers.Conv2D(w, 3, strides=2, padding="same", activation="relu", name=f"conv{i}")
        for i, w in enumerate(config.content_widths)] + [
        layers.Conv2D(config.cell_units, 3, padding="same", activation="relu", name="mix")], name="content")
    per_frame = keras.Sequential([keras.Input((s, s, 3))] + [
        layers.Conv2D(w, 3, strides=2, padding="same", activation="relu", name=f"conv{i}")
        for i, w in enumerate(config.frame_widths)] + [
        layers.Conv2D(2 * config.frame_channels, 1, name="mean_log_var", dtype="float32")], name="frame_coder")
    # === Functional Model ===
    frames = keras.Input((t, s, s, 3), name="frames")
    x = normalize(layers.Identity(name="to_float", dtype="float32")(frames))
    # Frame codes of the frames with the camera's shift undone: a still scene shaken by the camera
    # codes as still frames. Content and motion read the frames as filmed (undone for them too,
    # fewer samples were named their class: docs/sora_vaegan.md).
    still = x
    if config.max_shift:
        shifts = CameraShifts(config.max_shift, name="camera_shifts", dtype="float32")(x)
        still = ShiftFrames(config.max_shift, name="stabilize", dtype="float32")(x, -shifts)
    x = FrameDiff(config.diff_scale, config.diff_clip, name="frame_diff")(x)
    # Content: the middle frame and where the clip moves (mean absolute frame difference), not
    # which way: the decoder is to take the way from the motion vector and the class. Without the
    # where, the drawn layer cannot tell the moving object from the still ones (they look alike).
    energy = ops.mean(ops.abs(x[:, 1:, ..., 3:]), axis=(1, -1))[..., None]
    c = content(ops.concatenate([x[:, t // 2, ..., :3], energy], axis=-1))
    c_mean = layers.Conv2D(config.latent_channels, 1, name="content_mean", dtype="float32")(c)
    c_log_var = layers.Conv2D(config.latent_channels, 1, name="content_log_var", dtype="float32")(c)
    m = lstm(FrameTimeDistributed(cnn, name="frame_features")(x))
    m_mean = layers.Dense(config.motion_dim, name="motion_mean", dtype="float32")(m)
    m_log_var = layers.Dense(config.motion_dim, name="motion_log_var", dtype="float32")(m)
    # Frames: a coarse code of every frame, which says where things are at each time.
    f = FrameTimeDistributed(per_frame, name="frame_codes")(still)  # [B, T, f, f, 2 * channels]
    f_mean, f_log_var = f[..., :config.frame_channels], f[..., config.frame_channels:]

    def flat(content_part, frames_part, motion_part, shift_part):
        parts = [ops.reshape(content_part, (-1, config.content_size)),
                 ops.reshape(frames_part, (-1, config.frames_size)), motion_part]
        return ops.concatenate(parts + ([ops.reshape(shift_part, (-1, config.shift_size))] if config.max_shift else []),
                               axis=-1)
    # The shifts are measured, not learned: a fixed posterior spread of SHIFT_SD px.
    s_mean = shifts if config.max_shift else None
    s_log_var = ops.full_like(shifts, 2.0 * np.log(SHIFT_SD)) if config.max_shift else None
    return keras.Model(frames, {"z_mean": flat(c_mean, f_mean, m_mean, s_mean),
                                "z_log_var": flat(c_log_var, f_log_var, m_log_var, s_log_var)}, name="encoder")


def build_decoder(config):
    """Latent [+ class] -> frames [B, T, S, S, 3] in [0, 1], drawn frame by frame.

    The content cells (+ class) are mixed by two 3x3 convs; each frame's coarse code, upsampled
    to the content grid, joins them, and an LSTM unrolled T steps from the motion vector (+ class)
    adds its state to every cell of its frame; one upsampling CNN draws each frame from that.
    The content holds the detail of the still scene, the frame codes where things are at each
    time: a moving object is drawn where its frame puts it, with no need to move anything. Each
    frame is drawn as if the camera stood still and then moved by the latent's camera shift for
    that frame (with max_shift 0, there is none).
    """
    t, u, g, fg = config.num_frames, config.cell_units, config.grid, config.frame_grid
    # === Layers ===
    mix = [layers.Conv2D(u, 3, padding="same", activation="relu", name=f"mix{i}") for i in range(2)]
    width = max(8, u // 2)
    join = layers.Conv2D(width, 3, padding="same", name="join")
    draw = upsampling_cnn((g, g, width), config.dec_widths, 3, name="draw")
    motion_in = layers.Dense(u, activation="relu", name="motion_embedding")
    lstm = layers.LSTM(u, return_sequences=True, unroll=config.unroll, name="lstm")
    from_state = layers.Dense(width, name="from_state")
    # === Functional Model ===
    z = keras.Input(config.latent_shape, name="z")
    inputs = {"z": z}
    part = config.parts
    x = ops.reshape(z[:, part["content"]], (-1, g, g, config.latent_channels))
    f = ops.reshape(z[:, part["frames"]], (-1, t, fg, fg, config.frame_channels))
    v = z[:, part["motion"]]
    if config.conditional:
        label = keras.Input((config.num_classes,), name="class")  # one-hot (or class weights)
        inputs["class"] = label
        c = layers.Dense(config.class_dim, name="class_embedding")(label)
        x = ops.concatenate([x, ops.tile(c[:, None, None, :], (1, g, g, 1))], axis=-1)
        v = ops.concatenate([v, c], axis=-1)
    for conv in mix:
        x = conv(x)
    f = FrameTimeDistributed(layers.UpSampling2D(g // fg, interpolation="bilinear"), name="frame_up")(f)
    h = from_state(lstm(ops.repeat(motion_in(v)[:, None, :], t, axis=1)))  # [B, T, width]
    y = FrameTimeDistributed(join, name="join")(ops.concatenate([ops.repeat(x[:, None], t, axis=1), f], axis=-1))
    y = ops.relu(y + h[:, :, None, None, :])
    out = FrameTimeDistributed(draw, name="draw_frames")(y)
    if config.max_shift:  # drawn still, then moved as the camera moved
        out = ShiftFrames(config.max_shift, name="camera_shift", dtype="float32")(
            out, ops.reshape(z[:, part["shifts"]], (-1, t, 2)))
    return keras.Model(inputs, out, name="decoder")


def build_discriminator(config):
    t, s = config.num_frames, config.image_size
    # === Layers ===
    cnn = frame_cnn((s, s, 6), config.disc_widths, config.disc_features, norm=False)
    lstm = layers.LSTM(config.disc_units, unroll=config.unroll, name="lstm")
    # === Functional Model ===
    frames = keras.Input((t, s, s, 3), name="frames")  # in [0, 1]
    x = (layers.Identity(name="to_float", dtype="float32")(frames) - 0.5) / 0.25
    x = FrameDiff(config.diff_scale, config.diff_clip, name="frame_diff")(x)
    x = FrameTimeDistributed(cnn, name="frame_features")(x)
    features = lstm(x)
    real = layers.Dense(1, name="real", dtype="float32")(features)
    classes = layers.Dense(config.num_classes, name="classes", dtype="float32")(features)
    return keras.Model(frames, {"real": real, "classes": classes, "features": features},
                       name="discriminator")

