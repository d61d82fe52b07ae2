"""Seed 002: five-conv encoder / five-transposed-conv decoder with BN + ReLU and skips, sigmoid
output, MSE, Adam 1e-3, batch 32, 20 % held out (reported PSNR 27.4, SSIM 0.85 on 10k photos).
The paper states no epoch count (50 is colorjax's choice). Its text has five stride-2 encoder
convolutions; the fragment of its Fig. 1 that survives also shows a stride-1 64-channel
convolution at full resolution first, which this model does not have.

    python -m colorjax.train --config configs/encdec_small.py --config.data.train=folder:/data/photos
"""

from colorjax.config import apply_variant, default_config


def get_config(variant: str = ""):
  c = default_config()
  c.data.eval_fraction = 0.2
  c.batch_size = 32
  c.total_steps = c.pretrain_steps = 12_500        # 50 epochs of 8k photos at batch 32
  c.model.generator = "encdec_small"
  c.model.output_activation = "sigmoid"
  c.model.discriminator = "none"
  c.loss.reconstruction = "mse"
  c.optim.g.update(lr=1e-3, b1=0.9, b2=0.999)
  return apply_variant(c, variant)
