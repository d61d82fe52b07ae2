"""Seed 004: the pix2pix U-Net GAN + PatchGAN with FID tracked during training.

The paper reports validation PSNR/SSIM curves and FID (SSIM 0.67, PSNR 19.48, FID 72.47). It
states neither its training resolution ("hardware-imposed constraints") nor its length:
256 px and 50k steps are colorjax's choice.
Every eval logs FID of the predictions against the held-out photos when `fid_weights` points
at pytorch-fid's Inception weights (`pt_inception-2015-12-05-6726825d.pth`, or that state
dict as .npz/.safetensors; nothing is downloaded):

    python -m colorjax.train --config configs/unet_gan_fid.py \
        --config.data.train=folder:/data/photos --config.fid_weights=/weights/pt_inception.pth
"""

from colorjax.config import apply_variant, default_config


def get_config(variant: str = ""):
  c = default_config()
  c.model.generator = "pix2pix_unet"   # num_downs = log2(image_size): 8 at 256 px
  c.total_steps = 50_000
  c.pretrain_steps = 0                 # adversarial from the start, as the paper's curves show
  c.eval_max_images = 1000             # FID needs many images to be stable
  return apply_variant(c, variant)
