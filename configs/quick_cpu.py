"""The best colorizer colorjax trains in under 30 minutes on a 2-core CPU (issue 8).

    python -m colorjax.train --config configs/quick_cpu.py     # workdir: runs/quick_cpu

(DRAFT: being measured.)
"""

import os

from colorjax.config import default_config

DATA = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "shared", "data")


def get_config():
  c = default_config()
  c.data.train = ",".join("folder:" + os.path.normpath(os.path.join(DATA, d)) for d in ("ade20k", "imagenet_sample"))
  c.data.eval_fraction = 0.2
  c.data.max_zoom = 1.5
  c.image_size = 64
  c.batch_size = 16
  c.total_steps = c.pretrain_steps = 3000
  c.log_every = 50
  c.eval_every = c.checkpoint_every = 500
  c.eval_max_images = 200
  c.ema_decay = 0.999
  c.model.generator = "resnet_unet"
  c.model.num_classes = 256
  c.model.decode = "annealed_mean"
  c.model.temperature = 0.38
  c.model.discriminator = "none"
  c.loss.rebalance = False
  c.optim.g.update(lr=1e-3, b1=0.9, b2=0.999, decay_steps=3000)
  return c
