"""The fields every config has (other tools read them), with seed 000's values as defaults.

Config files in `configs/` start from `default_config()` and change what their system needs;
every field can be overridden on the command line (`--config.batch_size=32`).
"""

from __future__ import annotations

import ml_collections


def default_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.image_size = 256            # training crops are image_size x image_size
  c.batch_size = 16             # global, over all devices and processes
  c.total_steps = 50_000
  c.pretrain_steps = 25_000     # phase 1: G alone on the reconstruction loss
  c.log_every = 50
  c.eval_every = 1000
  c.eval_max_images = 500       # held-out photos scored at each eval
  c.checkpoint_every = 1000
  c.keep_checkpoints = 3
  c.dtype = "float32"           # compute dtype; parameters and optimiser state stay float32

  c.data = ml_collections.ConfigDict()
  c.data.train = ""             # e.g. "folder:/photos" (several: "folder:a,folder:b")
  c.data.eval = ""              # "" = the held-out split of data.train
  c.data.eval_fraction = 0.1    # share of data.train held out, by a hash of the file path
  c.data.num_workers = 0        # grain worker processes (0: threads in this process)

  c.model = ml_collections.ConfigDict()
  c.model.generator = "resnet_unet"   # or "pix2pix_unet"
  c.model.resnet_depth = 18
  c.model.num_downs = -1              # pix2pix_unet: -1 derives log2(image_size)
  c.model.ngf = 64
  c.model.ndf = 64
  c.model.dropout = 0.5               # pix2pix_unet's middle blocks
  c.model.output_activation = "tanh"  # or "sigmoid" (seed 000)
  c.model.upsample = "subpixel"       # or "transpose": same maths, see models/layers.py
  c.model.discriminator = "patchgan"  # or "none" for a plain regressor
  c.model.d_layers = 3                # 3: the 70x70 PatchGAN

  c.loss = ml_collections.ConfigDict()
  c.loss.reconstruction = "l1"        # "l1", "mse" or "smooth_l1"
  c.loss.l1_weight = 100.0            # lambda of BCE + lambda * L1 in phase 2

  c.optim = ml_collections.ConfigDict()
  for name in ("g", "d"):
    c.optim[name] = ml_collections.ConfigDict({"lr": 2e-4, "b1": 0.5, "b2": 0.999})
  return c
