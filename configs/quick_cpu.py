"""The best colorizer colorjax trains in under 30 minutes on a 2-core CPU (issue 8).

    python -m colorjax.train --config configs/quick_cpu.py     # workdir: runs/quick_cpu

Seed 003's 256-class ResNet-18 colorizer with the class-rebalanced cross-entropy, decoded by
Zhang et al.'s annealed mean (T = 0.38), trained at 64 px with a cosine learning-rate decay and
an EMA of the weights (used by eval and colorize) on `../shared/data/ade20k` + `imagenet_sample`
(20 % held out by the path hash). Why this system: see docs/results.md, "Choosing quick_cpu".
Its 30-minute held-out result is being measured (benchmarks/quick_cpu_vs_torch.sh); until docs/results.md records it, treat this config as unmeasured.
"""

import os

from colorjax.config import default_config

DATA = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "shared", "data")
STEPS = 4500


def get_config():
  c = default_config()
  c.data.train = ",".join("folder:" + os.path.normpath(os.path.join(DATA, d))
                          for d in ("ade20k", "imagenet_sample"))
  c.data.eval_fraction = 0.2
  c.image_size = 64
  c.batch_size = 16
  c.total_steps = c.pretrain_steps = STEPS
  c.log_every = 100
  c.eval_every = c.checkpoint_every = 1500
  c.eval_max_images = 200
  c.ema_decay = 0.999
  c.model.generator = "resnet_colorizer"
  c.model.num_classes = 256
  c.model.decode = "annealed_mean"
  c.model.temperature = 0.38
  c.model.discriminator = "none"
  c.loss.rebalance = True
  c.optim.g.update(lr=1e-3, b1=0.9, b2=0.999, decay_steps=STEPS)
  return c
