"""Models looked up by name from `config.model` (big_vision style)."""

from __future__ import annotations

import math

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from colorjax.models.pix2pix import PatchGAN, UNetGenerator
from colorjax.models.resnet_unet import ResNetUNet


def build_generator(config: ml_collections.ConfigDict) -> nn.Module:
  m, dtype = config.model, jnp.dtype(config.get("dtype", "float32"))
  if m.generator == "resnet_unet":
    return ResNetUNet(resnet_depth=m.resnet_depth, output_activation=m.output_activation,
                      upsample=m.upsample, dtype=dtype)
  if m.generator == "pix2pix_unet":
    num_downs = m.num_downs if m.num_downs > 0 else int(math.log2(config.image_size))
    return UNetGenerator(num_downs=num_downs, ngf=m.ngf, dropout=m.dropout,
                         output_activation=m.output_activation, upsample=m.upsample, dtype=dtype)
  raise ValueError(f"unknown model.generator {m.generator!r}: use 'resnet_unet' or 'pix2pix_unet'")


def build_discriminator(config: ml_collections.ConfigDict) -> nn.Module:
  m = config.model
  if m.discriminator == "patchgan":
    return PatchGAN(n_layers=m.d_layers, ndf=m.ndf, dtype=jnp.dtype(config.get("dtype", "float32")))
  raise ValueError(f"unknown model.discriminator {m.discriminator!r}: use 'patchgan'")
