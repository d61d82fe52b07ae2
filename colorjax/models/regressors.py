"""The non-adversarial seed systems: ResNet feature extractor + upsampling (seeds 001, 003) and
the small encoder-decoder of seed 002.

`ResNetColorizer` follows the design seeds 001 and 003 cite (Melas-Kyriazi's colorizer after
Zhang): the first two ResNet stages give 128 mid-level features at H/8, and three upsampling
blocks bring them back to H. With `num_classes=256` the head predicts the ab classes of
`colorjax.ab_bins` (seed 003's classifier) instead of ab itself.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from colorjax.models.layers import Dtype, UpConv, batch_norm, conv, output_activation
from colorjax.models.resnet_unet import ResNetEncoder


def _upsample2(x: jax.Array) -> jax.Array:
  """PyTorch's nn.Upsample(scale_factor=2) (nearest)."""
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


class ResNetColorizer(nn.Module):
  """L [B, H, W, 1] -> ab [B, H, W, 2] (or class logits [B, H, W, num_classes]); H, W % 8 == 0."""
  resnet_depth: int = 18
  num_classes: int = 0
  output_activation: str = "tanh"
  decode: str = "annealed_mean"   # how `colorjax.ab_bins.decode` turns classes into ab
  temperature: float = 0.38
  prior_shift: tuple[float, ...] = ()  # added to the logits before decoding (`build_generator`)
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, l: jax.Array, train: bool = False) -> jax.Array:
    if l.shape[1] % 8 or l.shape[2] % 8:
      raise ValueError(f"ResNetColorizer needs H and W divisible by 8, got {l.shape[1:3]}")
    h = ResNetEncoder(self.resnet_depth, self.dtype, num_stages=2, name="encoder")(l, train)[-1]
    for i, widths in enumerate(((128,), (64, 64), (32,))):
      for j, width in enumerate(widths):
        h = conv(width, 3, dtype=self.dtype, name=f"up{i}_conv{j}")(h)
        h = nn.relu(batch_norm(train, self.dtype, f"up{i}_bn{j}")(h))
      if i < 2:
        h = _upsample2(h)
    out = conv(self.num_classes or 2, 3, use_bias=True, dtype=self.dtype, name="head")(h)
    out = _upsample2(out).astype(jnp.float32)
    return out if self.num_classes else output_activation(self.output_activation, out)


class EncoderDecoder(nn.Module):
  """Seed 002: five stride-2 conv + BN + ReLU layers, five transposed convs back, U-Net skips,
  sigmoid output. L [B, H, W, 1] -> ab [B, H, W, 2]; H, W % 32 == 0."""
  widths: Sequence[int] = (64, 128, 256, 512, 512)
  output_activation: str = "sigmoid"
  upsample: str = "subpixel"
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, l: jax.Array, train: bool = False) -> jax.Array:
    n = len(self.widths)
    if l.shape[1] % 2 ** n or l.shape[2] % 2 ** n:
      raise ValueError(f"EncoderDecoder needs H and W divisible by {2 ** n}, got {l.shape[1:3]}")
    skips, h = [l], l
    for i, width in enumerate(self.widths):
      h = conv(width, 3, 2, dtype=self.dtype, name=f"enc{i}")(h)
      h = nn.relu(batch_norm(train, self.dtype, f"enc{i}_bn")(h))
      skips.append(h)
    skips.pop()
    for i, width in enumerate(list(reversed(self.widths[:-1])) + [2]):
      h = UpConv(width, use_bias=i == n - 1, impl=self.upsample, dtype=self.dtype, name=f"dec{i}")(h)
      if i == n - 1:
        break
      h = nn.relu(batch_norm(train, self.dtype, f"dec{i}_bn")(h))
      h = jnp.concatenate([h, skips.pop().astype(h.dtype)], axis=-1)
    return output_activation(self.output_activation, h.astype(jnp.float32))
