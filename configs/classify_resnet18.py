"""Seed 003 (a): 256 ab classes (16 x 16 bins) predicted per pixel by a ResNet-18 colorizer.

Class-rebalanced cross-entropy with the paper's w_c = 1 / sqrt(n_c + 1e5) over its 10k photos at
256 px, applied to class shares (`loss.rebalance_offset`) so that the weights are the paper's
however many pixels are counted (`data.stats_images` crops at `image_size`);
argmax decoding as the paper (reported PSNR 25.31), or Zhang et al.'s annealed mean with
`--config.model.decode=annealed_mean` (T = 0.38). Eval also reports pixel accuracy.
The paper's §3.2 hyperparameters: batch 8, Adam lr 0.01 with PyTorch's other defaults, 50 epochs.

Two differences from the paper. Its encoder starts from ImageNet weights: pass
`--config.model.encoder_weights=resnet18-f37072fd.pth` (torchvision's; colorjax downloads
none), else it trains from scratch. Its 16 x 16 bins cover OpenCV's 8-bit a, b (0..255, so
+-128 Lab units); colorjax's cover the +-110 the models predict (`ab_bins`).

    python -m colorjax.train --config configs/classify_resnet18.py --config.data.train=folder:/data/coco10k
"""

from colorjax.config import apply_variant, default_config


def get_config(variant: str = ""):
  c = default_config()
  c.data.eval_fraction = 0.2
  c.batch_size = 8
  c.total_steps = c.pretrain_steps = 50_000        # 50 epochs of 8k photos at batch 8
  c.model.generator = "resnet_colorizer"
  c.model.num_classes = 256
  c.model.decode = "argmax"
  c.model.discriminator = "none"
  c.loss.rebalance = True
  c.optim.g.update(lr=1e-2, b1=0.9, b2=0.999)
  return apply_variant(c, variant)
