"""ResNet encoder U-Net generator (seed 000): L [B, H, W, 1] -> ab [B, H, W, 2].

The encoder is torchvision's ResNet-18/34 with a 1-channel stem; module names mirror
torchvision's state dict (`conv1`, `bn1`, `layer1_0/conv1`, `layer2_0/downsample_conv`, ...)
so ImageNet weights can be mapped in. The decoder upsamples with `UpConv` (the transposed
convolution of seed 000) and concatenates a skip from every encoder stage: the stem (H/2),
`layer1..layer3` (H/4..H/16) and the input itself (H). H and W must be multiples of 32.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from colorjax.models.layers import Dtype, UpConv, batch_norm, conv, output_activation

STAGES = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}


class BasicBlock(nn.Module):
  features: int
  stride: int = 1
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    y = conv(self.features, 3, self.stride, dtype=self.dtype, name="conv1")(x)
    y = nn.relu(batch_norm(train, self.dtype, "bn1")(y))
    y = conv(self.features, 3, dtype=self.dtype, name="conv2")(y)
    y = batch_norm(train, self.dtype, "bn2")(y)
    if self.stride != 1 or x.shape[-1] != self.features:
      x = conv(self.features, 1, self.stride, padding=0, dtype=self.dtype, name="downsample_conv")(x)
      x = batch_norm(train, self.dtype, "downsample_bn")(x)
    return nn.relu(x + y)


class ResNetEncoder(nn.Module):
  """Returns the feature maps of the stem and of the first `num_stages` stages, finest first."""
  depth: int = 18
  dtype: Dtype = jnp.float32
  num_stages: int = 4

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> list[jax.Array]:
    if self.depth not in STAGES:
      raise ValueError(f"model.resnet_depth must be one of {sorted(STAGES)}, got {self.depth}")
    h = conv(64, 7, 2, dtype=self.dtype, name="conv1")(x)
    h = nn.relu(batch_norm(train, self.dtype, "bn1")(h))
    features = [h]
    h = nn.max_pool(h, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
    for stage, blocks in enumerate(STAGES[self.depth][:self.num_stages]):
      width = 64 * 2 ** stage
      for block in range(blocks):
        stride = 2 if stage > 0 and block == 0 else 1
        h = BasicBlock(width, stride, self.dtype, name=f"layer{stage + 1}_{block}")(h, train)
      features.append(h)
    return features


class DecoderBlock(nn.Module):
  features: int
  upsample: str = "subpixel"
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, skip: jax.Array, train: bool) -> jax.Array:
    h = UpConv(self.features, impl=self.upsample, dtype=self.dtype, name="up")(x)
    h = nn.relu(batch_norm(train, self.dtype, "up_bn")(h))
    h = jnp.concatenate([h, skip.astype(h.dtype)], axis=-1)
    h = conv(self.features, 3, dtype=self.dtype, name="conv")(h)
    return nn.relu(batch_norm(train, self.dtype, "bn")(h))


class ResNetUNet(nn.Module):
  resnet_depth: int = 18
  decoder_features: Sequence[int] = (256, 128, 64, 64, 32)
  output_activation: str = "tanh"
  upsample: str = "subpixel"
  num_classes: int = 0            # > 0: ab-class logits instead of ab (as ResNetColorizer)
  decode: str = "annealed_mean"   # how `colorjax.ab_bins.decode` turns classes into ab
  temperature: float = 0.38
  prior_shift: tuple[float, ...] = ()  # added to the logits before decoding (`build_generator`)
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, l: jax.Array, train: bool = False) -> jax.Array:
    if l.shape[1] % 32 or l.shape[2] % 32:
      raise ValueError(f"ResNetUNet needs H and W divisible by 32, got {l.shape[1:3]}")
    stem, *stages = ResNetEncoder(self.resnet_depth, self.dtype, name="encoder")(l, train)
    skips = [l, stem] + stages[:-1]          # resolutions H, H/2, H/4, H/8, H/16
    h = stages[-1]                           # H/32
    for i, (features, skip) in enumerate(zip(self.decoder_features, reversed(skips))):
      h = DecoderBlock(features, self.upsample, self.dtype, name=f"decoder{i}")(h, skip, train)
    h = conv(self.num_classes or 2, 1, padding=0, use_bias=True, dtype=self.dtype, name="head")(h)
    h = h.astype(jnp.float32)
    return h if self.num_classes else output_activation(self.output_activation, h)
