"""Seed 003 (b): ResNet-34 feature extractor + upsampling layers regressing ab directly.

COCO 10k (8k / 2k) at 256 px, batch 16, lr 1e-3, 50 epochs (reported PSNR 25.94). The paper's
ResNet-34 is pretrained: pass `--config.model.encoder_weights=resnet34-b627a593.pth`
(torchvision's ImageNet weights; colorjax downloads none), else it trains from scratch.

    python -m colorjax.train --config configs/regress_resnet34.py --config.data.train=folder:/data/coco10k
"""

from colorjax.config import apply_variant, default_config


def get_config(variant: str = ""):
  c = default_config()
  c.data.eval_fraction = 0.2
  c.total_steps = c.pretrain_steps = 25_000        # 50 epochs of 8k photos at batch 16
  c.model.generator = "resnet_colorizer"
  c.model.resnet_depth = 34
  c.model.discriminator = "none"
  c.loss.reconstruction = "mse"
  c.optim.g.update(lr=1e-3, b1=0.9, b2=0.999)
  return apply_variant(c, variant)
