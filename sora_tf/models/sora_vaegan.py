"""sora_vaegan: a class-conditional video VAE trained against a discriminator (VAE-GAN).

- `encoder`: frames [B, T, S, S, 3] in [0, 255] -> `z_mean`, `z_log_var` [B, D], one flat latent
  per clip in parts (`Config.parts`): the content of the middle frame on a fine grid, a coarse
  code of every frame (where things are at each time), a motion vector (the sora_cls frame CNN
  and an LSTM) and, with `max_shift`, the camera's shift per frame.
- `decoder`: latent [+ one-hot class] -> frames [B, T, S, S, 3] in [0, 1], drawn frame by frame.
- `discriminator`: the sora_cls network again (no BatchNorm) with a real/fake logit, an auxiliary
  class output and its features for feature matching.
- a latent prior fitted to the training clips after training (`fit_prior`), which `sample` and
  the exported `generate` signature draw from.

Training starts as a VAE alone for `gan_warmup` epochs, then the discriminator joins, with small
GAN weights relative to the L1 reconstruction. `gan=False` is the VAE alone, for comparison.
Why each part is as it is, with the probes behind it: docs/sora_vaegan.md.

Run it: `make train MODEL=sora_vaegan`, or `python -m sora_tf train --model sora_vaegan --preset tiny`.
"""
from sora_tf.models.vaegan.config import ADDED_FIELDS, Config
from sora_tf.models.vaegan.model import SoraVaeGan

__all__ = ["ADDED_FIELDS", "Config", "SoraVaeGan", "build", "task"]

# The task code that fits, evaluates and exports this model (sora_tf/train/generate.py and
# sora_tf/export/generate.py), shared by every generative model in the zoo.
task = "generate"


def build(config):
    return SoraVaeGan(config, name="sora_vaegan")
