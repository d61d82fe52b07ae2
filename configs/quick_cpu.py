"""The best colour-vs-accuracy trade-off colorjax has found for 30 minutes on a 2-core CPU (issue 8).

    python -m colorjax.train --config configs/quick_cpu.py     # workdir: runs/quick_cpu

Seed 003's 256-class ResNet-18 colorizer trained with the class-rebalanced cross-entropy at
64 px, with a cosine learning-rate decay and an EMA of the weights (used by eval and colorize),
on `../shared/data/ade20k` + `imagenet_sample` (20 % held out by the path hash). It is decoded by
the mean of its colour distribution with the rebalancing divided back out
(`model.prior_correction` 1, T 1): the rebalanced loss teaches rare colours, the correction
keeps them where the model is sure. Why this system: docs/results.md, "Choosing quick_cpu".
Measured on the 512 held-out photos (256 px crops, RGB uint8; `python -m colorjax.evaluate
--workdir runs/quick_cpu --data folder:../shared/data/ade20k,folder:../shared/data/imagenet_sample
--split eval`), docs/results.md has the tables:
- 2026-11-30, 2-core Intel Xeon with AMX (bfloat16 by `dtype="auto"`): PSNR 23.44, SSIM 0.9429,
  colourfulness 19.9; `--checkpoint best` (step 3000) 23.52 / 0.9432 / 19.0. 22 min wall beside
  the test suite; the same steps took 16 min 35 s alone that morning.
- The PyTorch pix2pix recipe on the same VM that day (`benchmarks/quick_cpu_vs_torch.sh`):
  23.68 / 0.9403 / 13.4 after 15 min of L1, 20.66 / 0.9110 / 41.5 after 15 more minutes of GAN.
  No colour 22.85 / 0.9419 / 0.1; real photos 40.1. Not better than both: issue 8's goal is
  not reached.
- Without AMX (AMD EPYC, float32, 2026-11-24/25): 1620-1651 s wall; 23.42 / 0.9430 / 19.6 with
  the class histogram of then (its first 1000 training photos, all ADE20K).
`--prior_correction 0 --temperature 0.38` gives the old, bolder and blotchier decode.
`max_train_minutes` 29 keeps the 30-minute budget on a slower CPU: there the run stops early,
with its held-out scores and a checkpoint, before the learning rate has fully decayed (re-run
to finish it).
"""

from colorjax.config import ab_class_recipe, apply_variant, default_config, shared_photos


def get_config(variant: str = ""):
  c = default_config()
  c.data.train = shared_photos(__file__)
  c.data.eval_fraction = 0.2
  c.image_size = 64
  c.batch_size = 16
  c.log_every = 100
  c.eval_every = c.checkpoint_every = 1500
  c.eval_max_images = 200
  c.model.generator = "resnet_colorizer"
  c.max_train_minutes = 29  # start-up, compile and the final eval take well under a minute
  return apply_variant(ab_class_recipe(c, steps=4500), variant, variants=())
