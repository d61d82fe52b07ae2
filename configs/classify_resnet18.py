"""Seed 003 (a): 256 ab classes (16 x 16 bins) predicted per pixel by a ResNet-18 colorizer.

Class-rebalanced cross-entropy with the paper's w_c = 1 / sqrt(n_c + 1e5) over its 10k photos at
256 px, applied to class shares (`loss.rebalance_offset`) so that the weights are the paper's
however many pixels are counted (`data.stats_images` crops at `image_size`);
argmax decoding as the paper (reported PSNR 25.31), or Zhang et al.'s annealed mean with
`--config.model.decode=annealed_mean` (T = 0.38). Eval also reports pixel accuracy.

    python -m colorjax.train --config configs/classify_resnet18.py --config.data.train=folder:/data/coco10k
"""

from colorjax.config import apply_variant, default_config


def get_config(variant: str = ""):
  c = default_config()
  c.data.eval_fraction = 0.2
  c.total_steps = c.pretrain_steps = 25_000        # 50 epochs of 8k photos at batch 16
  c.model.generator = "resnet_colorizer"
  c.model.num_classes = 256
  c.model.decode = "argmax"
  c.model.discriminator = "none"
  c.loss.rebalance = True
  c.optim.g.update(lr=1e-3, b1=0.9, b2=0.999)
  return apply_variant(c, variant)
