"""The official pix2pix networks (Isola et al.; junyanz/pytorch-CycleGAN-and-pix2pix).

`UNetGenerator` is `UnetGenerator(1, 2, num_downs, ngf, BatchNorm2d, use_dropout)` written
as loops instead of nested blocks; `PatchGAN` is `NLayerDiscriminator` (n_layers=3 gives the
70x70 receptive field). The official down path applies its LeakyReLU in place, so its skips
carry LeakyReLU'd maps; every skip concat feeds straight into the up path's ReLU, where
relu(leaky_relu(x)) == relu(x), so plain skips compute the same function.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from colorjax.models.layers import Dtype, UpConv, batch_norm, conv, leaky_relu, output_activation


class UNetGenerator(nn.Module):
  """L [B, H, W, 1] -> ab [B, H, W, 2]; H and W must be multiples of 2**num_downs."""
  num_downs: int = 8
  ngf: int = 64
  dropout: float = 0.5
  output_activation: str = "tanh"
  upsample: str = "subpixel"
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, l: jax.Array, train: bool = False) -> jax.Array:
    n = self.num_downs
    if n < 5:
      raise ValueError(f"model.num_downs must be >= 5, got {n}")
    if l.shape[1] % 2 ** n or l.shape[2] % 2 ** n:
      raise ValueError(f"UNetGenerator(num_downs={n}) needs H, W divisible by {2 ** n}, got {l.shape[1:3]}")
    widths = [self.ngf * m for m in (1, 2, 4, 8)] + [self.ngf * 8] * (n - 4)
    downs, h = [], l
    for i, width in enumerate(widths):
      if i > 0:
        h = leaky_relu(h)
      h = conv(width, 4, 2, 1, dtype=self.dtype, name=f"down{i}")(h)
      if 0 < i < n - 1:
        h = batch_norm(train, self.dtype, f"down{i}_bn")(h)
      downs.append(h)
    for i in reversed(range(n)):
      h = UpConv(widths[i - 1] if i else 2, use_bias=i == 0, impl=self.upsample,
                 dtype=self.dtype, name=f"up{i}")(nn.relu(h))
      if i == 0:
        break
      h = batch_norm(train, self.dtype, f"up{i}_bn")(h)
      if 4 <= i < n - 1 and self.dropout > 0:
        h = nn.Dropout(self.dropout, deterministic=not train)(h)
      h = jnp.concatenate([downs[i - 1], h], axis=-1)
    return output_activation(self.output_activation, h.astype(jnp.float32))


class PatchGAN(nn.Module):
  """(L [B, H, W, 1], ab [B, H, W, 2]) -> real/fake logits per patch [B, H', W', 1]."""
  n_layers: int = 3
  ndf: int = 64
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, l: jax.Array, ab: jax.Array, train: bool = False) -> jax.Array:
    h = jnp.concatenate([l, ab], axis=-1)
    h = leaky_relu(conv(self.ndf, 4, 2, 1, use_bias=True, dtype=self.dtype, name="conv0")(h))
    for i in range(1, self.n_layers + 1):
      stride = 2 if i < self.n_layers else 1
      h = conv(self.ndf * min(2 ** i, 8), 4, stride, 1, dtype=self.dtype, name=f"conv{i}")(h)
      h = leaky_relu(batch_norm(train, self.dtype, f"bn{i}")(h))
    h = conv(1, 4, 1, 1, use_bias=True, dtype=self.dtype, name="logits")(h)
    return h.astype(jnp.float32)
