"""The latent prior of sora_vaegan: a Gaussian per class fitted to training clips' posterior
means after training, that `sample` and the exported `generate` draw from (N(0, I) until fitted).

A mixin of `SoraVaeGan`: its variables are the model's own, saved in its checkpoints.
"""
import numpy as np
from keras import ops

from sora_tf.models.vaegan.layers import motion_centres, normal_cdf, roll_latent


class LatentPrior:
    def _add_prior(self, config):
        """The prior's variables, N(0, I) until `fit_prior`; added in this order, which saved
        checkpoints keep (see `load_own_variables`)."""
        rows = config.num_classes if config.conditional else 1
        size = config.latent_shape[0]
        self.prior_mean = self.add_weight(shape=(rows, size),
                                          initializer="zeros", trainable=False, name="prior_mean")
        self.prior_basis = self.add_weight(shape=(rows, config.prior_components, size), initializer="zeros",
                                           trainable=False, name="prior_basis")
        self.prior_scale = self.add_weight(shape=(rows, size), initializer="ones", trainable=False, name="prior_scale")
        t = config.num_frames
        self.prior_time = self.add_weight(shape=(rows, t, t), trainable=False, name="prior_time",
                                          initializer=lambda shape, dtype=None: ops.tile(ops.eye(t)[None], (rows, 1, 1)))
        if config.shift_size:  # a Cholesky factor of the class's camera shifts' covariance
            n = config.shift_size
            self.prior_shift = self.add_weight(shape=(rows, n, n), trainable=False, name="prior_shift",
                                               initializer=lambda shape, dtype=None: ops.tile(ops.eye(n)[None], (rows, 1, 1)))
        # Where drawn clips happen: per class, the chance of each move (dy, dx) in frame-grid cells
        # (index dy * f + dx, each mod f) from the grid's middle; unfitted, all at the middle.
        cells = config.frame_grid ** 2
        self.prior_where = self.add_weight(shape=(rows, cells), trainable=False, name="prior_where",
                                           initializer=lambda shape, dtype=None: ops.tile(ops.one_hot(0, cells)[None], (rows, 1)))
        if config.prior_motions:  # per class, training clips' frame-code changes over time (and how many)
            self.prior_changes = self.add_weight(shape=(rows, config.prior_motions, config.frames_size),
                                                 initializer="zeros", trainable=False, name="prior_changes")
            self.prior_changes_where = self.add_weight(shape=(rows, config.prior_motions), initializer="zeros",
                                                       trainable=False, name="prior_changes_where")
            self.prior_changes_count = self.add_weight(shape=(rows,), initializer="zeros", trainable=False,
                                                       name="prior_changes_count")

    def load_own_variables(self, store):
        """The prior's variables in the order they were added. A checkpoint saved before the
        fitted prior has none of them: it samples from N(0, I), as it did when saved. One saved
        before `prior_time` draws the frame codes' residual independently in time, one saved
        before `prior_where` draws its latents unmoved (as fitted, not centred), and one saved
        without `prior_changes` (empty) draws the frame codes' change from the Gaussian, as they
        did."""
        own = [self.prior_mean, self.prior_basis, self.prior_scale, self.prior_time]
        own += [self.prior_shift] if self.config.shift_size else []
        own += [self.prior_where]
        own += ([self.prior_changes, self.prior_changes_where, self.prior_changes_count]
                if self.config.prior_motions else [])
        if len(store.keys()) > len(own):
            super().load_own_variables(store)  # Keras's error: not this model's variables
        for i in range(len(store.keys())):
            own[i].assign(store[str(i)])

    def latent_from_noise(self, noise, labels=None):
        """Latents [B, D] from standard normal `noise` [B, *noise_shape] and int class
        ids `labels` (None, or an unconditional model: the one mean): mean of the class +
        noise along the principal directions + residual noise per number, the frame codes'
        correlated in time as the class's are (`prior_time`), the camera shifts drawn with their
        own covariance (`prior_shift`)."""
        c = self.config
        k, t, fs = c.prior_components, c.num_frames, c.frames_size
        noise = ops.convert_to_tensor(noise, "float32")
        batch = ops.shape(noise)[0]
        rows = (ops.zeros((batch,), "int32") if labels is None or not c.conditional else ops.cast(labels, "int32"))
        basis = ops.take(self.prior_basis, rows, axis=0)  # [B, k, D]
        residual = {name: noise[:, k + where.start:k + where.stop] for name, where in c.parts.items()}
        residual["frames"] = ops.reshape(ops.einsum("bts,bsi->bti", ops.take(self.prior_time, rows, axis=0),
                                                    ops.reshape(residual["frames"], (batch, t, fs // t))), (batch, fs))
        if "shifts" in residual:  # drawn with the class's covariance (their scale is 1)
            residual["shifts"] = ops.einsum("bij,bj->bi", ops.take(self.prior_shift, rows, axis=0), residual["shifts"])
        residual = ops.concatenate(list(residual.values()), axis=-1)
        z = (ops.take(self.prior_mean, rows, axis=0) + ops.einsum("bk,bkd->bd", noise[:, :k], basis)
             + residual * ops.take(self.prior_scale, rows, axis=0))
        end = k + c.latent_shape[0]  # the noise for where, then for whose change
        # Where: a number's normal CDF picks a move from the class's (inverse CDF).
        chance = normal_cdf(noise[:, end])
        cdf = ops.cumsum(ops.take(self.prior_where, rows, axis=0), axis=-1)
        cells = c.frame_grid ** 2
        move = ops.minimum(ops.sum(ops.cast(cdf < chance[:, None], "int32"), axis=-1), cells - 1)
        if c.prior_motions:
            z, move = self._with_fitted_change(z, move, rows, normal_cdf(noise[:, end + 1]))
        return roll_latent(c, z, move // c.frame_grid, move % c.frame_grid)

    def _with_fitted_change(self, z, move, rows, chance):
        """(latents, moves): centred latents `z` [B, D] with their frame codes' change over time
        replaced by that of the training clip that `chance` [B] in [0, 1) picks from its class's
        `prior_changes`, and `move` [B] by where that clip happened; rows whose class has none keep
        the Gaussian's change and `move`."""
        c = self.config
        t, part = c.num_frames, c.parts["frames"]
        count = ops.take(self.prior_changes_count, rows, axis=0)
        pick = ops.minimum(ops.cast(chance * count, "int32"), ops.maximum(ops.cast(count, "int32") - 1, 0))
        index = rows * c.prior_motions + pick  # into the classes' banks laid end to end
        change = ops.take(ops.reshape(self.prior_changes, (-1, c.frames_size)), index, axis=0)
        frames = ops.reshape(z[:, part], (-1, t, c.frames_size // t))
        still = ops.reshape(ops.repeat(ops.mean(frames, axis=1, keepdims=True), t, axis=1), (-1, c.frames_size))
        fitted = count > 0
        frames = ops.where(fitted[:, None], still + change, z[:, part])
        where = ops.cast(ops.take(ops.reshape(self.prior_changes_where, (-1,)), index), "int32")
        return (ops.concatenate([z[:, :part.start], frames, z[:, part.stop:]], axis=-1),
                ops.where(fitted, where, move))

    def motion_centres(self, frames):
        """Where each clip of `frames` moves most, in frame-grid cells (see `motion_centres`)."""
        return motion_centres(frames, self.config.frame_grid)

    def fit_prior(self, z_mean, labels=None, centres=None):
        """Fit the prior that `sample` draws from to the posterior means `z_mean` [N, D] of
        training clips (and their int `labels`): per class, a Gaussian with the class's mean, the
        first `prior_components` principal directions of its clips' spread around it, and the rest
        of their variance per latent number, correlated in time in the frame codes (a T x T
        correlation shared by the cells). Camera shifts are drawn with the class's full covariance
        of them. A class with fewer than 2 clips takes the spread of all clips around their class
        means.

        With `centres` ([N, 2], where each clip moves most: `motion_centres`), each clip is first
        moved (`roll_latent`) so that its centre is mid-grid, and where a drawn clip happens is
        drawn apart, from where the class's clips happen (`prior_where`). With `prior_motions`, a
        draw's change over time is one training clip's (`prior_changes`), not the Gaussian's.
        Why each of these, with measurements: docs/sora_vaegan.md.
        """
        z = np.asarray(z_mean, np.float32)
        n, size = z.shape
        if n < 2 or size != self.config.latent_shape[0]:
            raise ValueError(f"fit_prior needs posterior means [N >= 2, {self.config.latent_shape[0]}], got {z.shape}")
        rows = self.prior_mean.shape[0]
        labels = np.zeros(n, int) if labels is None or rows == 1 else np.asarray(labels, int)
        f = self.config.frame_grid
        moves = np.zeros((n, 2), int)  # from the grid's middle to where each clip moves most
        if centres is not None:
            centres = np.asarray(centres, np.float32)
            if centres.shape != (n, 2):
                raise ValueError(f"fit_prior needs one centre (row, column) per clip, [{n}, 2], got {centres.shape}")
            moves = np.floor(centres + 0.5).astype(int) - (f - 1) // 2  # nearest cell less the middle one
            z = np.asarray(roll_latent(self.config, z, -moves[:, 0], -moves[:, 1]))
        where = np.zeros((rows, f * f), np.float32)
        cells = (moves[:, 0] % f) * f + moves[:, 1] % f  # each clip's place, as prior_where indexes it
        np.add.at(where, (labels, cells), 1.0)
        where[where.sum(1) == 0] = where.sum(0)  # a class without clips: where all clips happen
        means = np.tile(z.mean(0), (rows, 1))
        for c in np.unique(labels):
            means[c] = z[labels == c].mean(0)
        counts = np.bincount(labels, minlength=rows)
        # The pooled fit (an SVD of every clip, ~8 s at the default size) only where a class needs it.
        pooled = self._gaussian(z - means[labels]) if (counts < 2).any() else None
        fits = [self._gaussian(z[labels == c] - means[c]) if counts[c] >= 2 else pooled for c in range(rows)]
        basis, scale, time, shift = (np.stack(part) for part in zip(*fits))
        self.prior_mean.assign(means)
        self.prior_basis.assign(basis)
        self.prior_scale.assign(scale)
        self.prior_time.assign(time)
        if self.config.shift_size:
            self.prior_shift.assign(shift)
        self.prior_where.assign(where / where.sum(1, keepdims=True))
        if self.config.prior_motions:
            self._fit_changes(z, labels, rows, cells)

    def _fit_changes(self, z, labels, rows, cells):
        """`prior_changes`: per class, up to `prior_motions` of its clips (chosen at random, seeded)
        as their frame codes' change about their own time mean, from the (centred) latents `z`,
        with where each happened (`cells`, as `prior_where` counts them)."""
        c = self.config
        k, part = c.prior_motions, c.parts["frames"]
        frames = z[:, part].reshape(len(z), c.num_frames, -1)
        change = (frames - frames.mean(1, keepdims=True)).reshape(len(z), -1)
        bank = np.zeros((rows, k, c.frames_size), np.float32)
        where = np.zeros((rows, k), np.float32)
        count = np.zeros(rows, np.float32)
        rng = np.random.default_rng(c.seed)
        for row in range(rows):
            chosen = rng.permutation(np.flatnonzero(labels == row))[:k]
            bank[row, :len(chosen)] = change[chosen]
            where[row, :len(chosen)] = cells[chosen]
            count[row] = len(chosen)
        self.prior_changes.assign(bank)
        self.prior_changes_where.assign(where)
        self.prior_changes_count.assign(count)

    def _gaussian(self, spread):
        """(basis [prior_components, D], residual scale [D], Cholesky factor [T, T] of the frame
        codes' residual correlation in time, Cholesky factor of the camera shifts' covariance) of
        zero-mean rows `spread`. The shifts are fitted apart from the rest (the camera's shake has
        nothing to do with the scene) and in full: 2T numbers, correlated in time as a shaking
        camera's are."""
        c = self.config
        n, size = spread.shape
        ss = c.shift_size
        shifts, spread = spread[:, size - ss:], spread[:, :size - ss]  # the shifts are the last part
        shift = np.linalg.cholesky(shifts.T @ shifts / (n - 1) + 1e-4 * np.eye(ss)) if ss else np.zeros((0, 0))
        _, s, vt = np.linalg.svd(spread, full_matrices=False)
        k = min(c.prior_components, len(s))
        basis = np.zeros((c.prior_components, size), np.float32)
        basis[:k, :size - ss] = vt[:k] * (s[:k, None] / np.sqrt(n - 1))
        rest = spread - (spread @ vt[:k].T) @ vt[:k]
        scale = np.concatenate([np.sqrt(np.sum(np.square(rest), axis=0) / (n - 1)), np.ones(ss)])
        part = c.parts["frames"]
        frames = (rest[:, part] / np.maximum(scale[part], 1e-6)).reshape(n, c.num_frames, -1)
        cov = np.einsum("nti,nsi->ts", frames, frames)
        time = np.eye(c.num_frames)
        if np.all(np.diag(cov) > 1e-9):  # else no residual left to correlate
            root = np.sqrt(np.diag(cov))
            time = np.linalg.cholesky(cov / np.outer(root, root) + 1e-4 * time) / np.sqrt(1 + 1e-4)
        return basis, scale, time, shift
