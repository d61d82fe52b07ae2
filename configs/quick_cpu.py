"""The best colour-vs-accuracy trade-off colorjax has found for 30 minutes on a 2-core CPU (issue 8).

    python -m colorjax.train --config configs/quick_cpu.py     # workdir: runs/quick_cpu

Seed 003's 256-class ResNet-18 colorizer with the class-rebalanced cross-entropy, decoded by
Zhang et al.'s annealed mean (T = 0.38), trained at 64 px with a cosine learning-rate decay and
an EMA of the weights (used by eval and colorize) on `../shared/data/ade20k` + `imagenet_sample`
(20 % held out by the path hash). Why this system: see docs/results.md, "Choosing quick_cpu".
Measured (2-core VM, 2026-11-24, `bash benchmarks/quick_cpu_vs_torch.sh`): 1620 s wall
including start-up, compile and evals (about 45 img/s). On the 512 held-out photos (256 px crops,
RGB uint8): PSNR 22.93, SSIM 0.9397, colourfulness 24.3. In the same run: no colour 22.85 /
0.9419 / 0.1, real photos 40.1; the PyTorch pix2pix recipe 23.68 / 11.1 after 15 min of L1 and
20.16 / 43.0 after 15 more minutes of GAN. It is between the two, not better than both: issue
8's goal is not reached yet. `--checkpoint best` (step 1500) gives 23.29 dB at colourfulness 19.7.
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
