"""Seed 001: ResNet-18 feature extractor + upsampling colorization module, regression on ab.

MIT Places subset (40k photos, 90/10 split) at 256 px; the paper's best row (Table 1: PSNR
18.90, SSIM 0.82) is the colour-weighted loss at lr 1e-4 for 100 epochs. Pick the loss with
`--config.loss.reconstruction=mse|l1|smooth_l1`, `--config.loss.color_weighted=True` (per-pixel
weights from the inverse frequency of the training set's ab classes) and
`--config.loss.tv_weight=0.1` (total variation as a regulariser). SmoothL1 is PyTorch's on Lab
ab (`loss.smooth_l1_beta`, 1 Lab unit). The paper states no batch size: 32 is colorjax's choice.
Its ResNet-18 was pretrained (on grayscale inputs): pass
`--config.model.encoder_weights=resnet18-f37072fd.pth` (torchvision's ImageNet weights; colorjax
downloads none), else it trains from scratch.

    python -m colorjax.train --config configs/regress_resnet18.py \
        --config.data.train=folder:/data/places_40k --config.loss.color_weighted=True
"""

from colorjax.config import apply_variant, default_config


def get_config(variant: str = ""):
  c = default_config()
  c.data.eval_fraction = 0.1
  c.batch_size = 32
  c.total_steps = c.pretrain_steps = 112_500      # 100 epochs of 36k photos at batch 32
  c.model.generator = "resnet_colorizer"
  c.model.resnet_depth = 18
  c.model.discriminator = "none"
  c.loss.reconstruction = "mse"
  c.optim.g.update(lr=1e-4, b1=0.9, b2=0.999)
  return apply_variant(c, variant)
