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

from colorjax.config import ab_class_recipe, default_config, shared_photos


def get_config():
  c = default_config()
  c.data.train = shared_photos(__file__)
  c.data.eval_fraction = 0.2
  c.image_size = 64
  c.batch_size = 16
  c.log_every = 100
  c.eval_every = c.checkpoint_every = 1500
  c.eval_max_images = 200
  c.model.generator = "resnet_colorizer"
  return ab_class_recipe(c, steps=4500)
