"""Seed 003 (c): the official pix2pix U-Net (6 levels at 64 px) + 70x70 PatchGAN.

COCO 10k subset (8k train / 2k eval) at 64 px, batch 16, Adam 2e-4 (0.5, 0.999) for G and D;
BCE + 100 * L1 from the first step for 50 epochs (50 x 8000 / 16 = 25k steps), as Shariatnia's
from-scratch U-Net that the paper follows (§3.4): no L1-only pretraining phase.
`model.num_downs=-1` derives log2(image_size) levels, so `--config.image_size=256` gives
pix2pix's `unet_256`.

    python -m colorjax.train --config configs/pix2pix_unet64.py \
        --config.data.train=folder:/path/to/coco_subset --workdir runs/pix2pix_unet64

Speed (docs/performance.md; `python -m colorjax.bench step --config configs/pix2pix_unet64.py`):
on a 2-core CPU a GAN step takes 0.5-0.8 s (20-30 img/s, the VM's speed varies by day), so the
25k steps take 3.5-5.5 h.
"""

from colorjax.config import apply_variant, default_config


def get_config(variant: str = ""):
  c = default_config()
  c.image_size = 64
  c.batch_size = 16
  c.data.eval_fraction = 0.2          # the seed's 8k / 2k split
  c.total_steps = 25_000
  c.pretrain_steps = 0
  c.model.generator = "pix2pix_unet"
  c.model.num_downs = -1
  c.model.upsample = "auto"           # col2im on CPU, subpixel elsewhere: same maths (docs/design.md)
  c.model.discriminator = "patchgan"
  c.model.d_layers = 3
  c.loss.reconstruction = "l1"
  c.loss.l1_weight = 100.0
  return apply_variant(c, variant)
