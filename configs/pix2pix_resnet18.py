"""Seed 000: ResNet-18 U-Net generator + 70x70 PatchGAN, L1 pretraining then BCE + 100 * L1.

COCO 10k subset (8k train / 2k eval) at 256 px, batch 16, Adam 2e-4 (0.5, 0.999) for G and D;
G pretrained 50 epochs with L1 (50 x 8000 / 16 = 25k steps), then adversarial fine-tuning
(the paper gives no length for it; 25k steps is colorjax's choice). Sigmoid output (§III.B.2).
The paper's encoder starts from ImageNet weights: pass
`--config.model.encoder_weights=resnet18-f37072fd.pth` (torchvision's; colorjax downloads
none), else it trains from scratch.

    python -m colorjax.train --config configs/pix2pix_resnet18.py \
        --config.data.train=folder:/path/to/coco_subset --workdir runs/pix2pix_resnet18

`--config configs/pix2pix_resnet18.py:cpu` is the same system at 64 px for a 2-core CPU.
"""

from colorjax.config import apply_variant, default_config


def get_config(variant: str = ""):
  c = default_config()
  c.data.eval_fraction = 0.2          # the seeds' 8k / 2k split
  c.model.output_activation = "sigmoid"
  return apply_variant(c, variant)
