"""Building blocks shared by the generators and the discriminator.

Initialisation follows pix2pix (`init_weights(type='normal', gain=0.02)`): conv kernels
N(0, 0.02), biases 0, batch-norm scale N(1, 0.02).
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Dtype = Any

conv_init = nn.initializers.normal(0.02)


def bn_scale_init(key: jax.Array, shape: tuple[int, ...], dtype: Dtype = jnp.float32) -> jax.Array:
  return 1.0 + 0.02 * jax.random.normal(key, shape, dtype)


def batch_norm(train: bool, dtype: Dtype, name: str | None = None) -> nn.BatchNorm:
  """BatchNorm with PyTorch's defaults (momentum 0.1, eps 1e-5).

  Inside `jax.jit` over a batch sharded on the `data` axis the statistics are those of the
  global batch, so no `axis_name` is needed (see docs/design.md).
  """
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                      dtype=dtype, scale_init=bn_scale_init, name=name)


# XLA:CPU's convolution picks an algorithm up to 60x slower than a patch matrix times the
# kernel for small outputs (3x3, 512 channels at 2x2: 131 ms vs 2 ms for a batch of 16) and
# for 2x2 kernels at every size measured (docs/performance.md), and 1.1-1.4x slower for the
# U-Net's and PatchGAN's 4x4 stride-2 convolutions with 64+ input channels and 32x32+ outputs
# (fwd + both grads, batch 16: 128x128x64 -> 128 952 vs 687 ms; smaller ones were a wash in the
# whole step). Same maths, only speed differs.
_IM2COL_MAX_PIXELS = 16
_IM2COL_MAX_TAPS = 4
_IM2COL_MIN_STRIDED_CHANNELS = 64
_IM2COL_MIN_STRIDED_PIXELS = 32 * 32
_NHWC = jax.lax.ConvDimensionNumbers((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))


def _im2col_conv(x: jax.Array, kernel: jax.Array, strides: tuple[int, int],
                 padding: tuple[tuple[int, int], tuple[int, int]]) -> jax.Array:
  kh, kw, _, cout = kernel.shape
  x = jnp.pad(x, ((0, 0), padding[0], padding[1], (0, 0)))
  ho = (x.shape[1] - kh) // strides[0] + 1
  wo = (x.shape[2] - kw) // strides[1] + 1
  patches = jnp.concatenate(
      [x[:, i:i + strides[0] * (ho - 1) + 1:strides[0], j:j + strides[1] * (wo - 1) + 1:strides[1]]
       for i in range(kh) for j in range(kw)], axis=-1)
  return patches @ kernel.reshape(-1, cout)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, precision=None,
                         preferred_element_type=None) -> jax.Array:
  """`lax.conv_general_dilated`, computed as im2col where XLA:CPU is pathologically slow."""
  plain = (jax.default_backend() == "cpu" and not isinstance(padding, str)
           and all(d in (None, 1) for d in tuple(lhs_dilation or ()) + tuple(rhs_dilation or ()))
           and feature_group_count == 1 and dimension_numbers in (None, _NHWC, ("NHWC", "HWIO", "NHWC")))
  if plain:
    (pt, pb), (pl, pr) = padding
    ho = (lhs.shape[1] + pt + pb - rhs.shape[0]) // window_strides[0] + 1
    wo = (lhs.shape[2] + pl + pr - rhs.shape[1]) // window_strides[1] + 1
    strided = (tuple(window_strides) == (2, 2) and rhs.shape[2] >= _IM2COL_MIN_STRIDED_CHANNELS
               and ho * wo >= _IM2COL_MIN_STRIDED_PIXELS)
    if ho * wo <= _IM2COL_MAX_PIXELS or rhs.shape[0] * rhs.shape[1] <= _IM2COL_MAX_TAPS or strided:
      return _im2col_conv(lhs, rhs, tuple(window_strides), tuple(map(tuple, padding)))
  return jax.lax.conv_general_dilated(
      lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
      feature_group_count, precision=precision, preferred_element_type=preferred_element_type)


def conv(features: int, kernel: int, stride: int = 1, padding: int | None = None,
         use_bias: bool = False, dtype: Dtype = jnp.float32, name: str | None = None) -> nn.Conv:
  """A conv with PyTorch-style symmetric padding (default: kernel // 2)."""
  pad = kernel // 2 if padding is None else padding
  return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                 padding=((pad, pad), (pad, pad)), use_bias=use_bias, dtype=dtype,
                 kernel_init=conv_init, conv_general_dilated=conv_general_dilated, name=name)


# Output phase r (0: even rows, 1: odd rows) and 2x2 tap t of the sub-pixel form use row
# 3 - r - 2t of the 4x4 transposed-conv kernel (derivation in `UpConv`'s docstring).
_PHASE_TAPS = np.array([[3, 1], [2, 0]])


def _subpixel_upsample(x: jax.Array, kernel: jax.Array) -> jax.Array:
  b, h, w, _ = x.shape
  cout = kernel.shape[-1]
  rows = _PHASE_TAPS[:, None, :, None]
  cols = _PHASE_TAPS[None, :, None, :]
  k2 = kernel[rows, cols]                                  # [r, s, th, tw, Cin, Cout]
  k2 = jnp.transpose(k2, (2, 3, 4, 0, 1, 5)).reshape(2, 2, -1, 4 * cout)
  y = conv_general_dilated(x, k2, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"))
  y = y.reshape(b, h + 1, w + 1, 2, 2, cout)
  phase = lambda r, s: y[:, r:r + h, s:s + w, r, s]
  out = jnp.stack([jnp.stack([phase(r, 0), phase(r, 1)], axis=3) for r in (0, 1)], axis=2)
  return out.reshape(b, 2 * h, 2 * w, cout)


def _overlap_add(y: jax.Array, axis: int, tap_axis: int) -> jax.Array:
  """Folds stride-2 taps: `out[2m + p - 1] += y[m, p]` along `axis` (phases stacked after it)."""
  tap = lambda p: jax.lax.index_in_dim(y, p, tap_axis, keepdims=False)
  zero = jnp.zeros((), y.dtype)
  shift = lambda z, d: jax.lax.pad(z, zero, [(d, -d, 0) if a == axis else (0, 0, 0) for a in range(z.ndim)])
  even = tap(1) + shift(tap(3), 1)    # out[2m]     = y[m, 1] + y[m - 1, 3]
  odd = tap(2) + shift(tap(0), -1)    # out[2m + 1] = y[m, 2] + y[m + 1, 0]
  return jnp.stack([even, odd], axis + 1)


def _col2im_upsample(x: jax.Array, kernel: jax.Array) -> jax.Array:
  # Every input pixel times all 16 taps in one matmul, then the overlapping 4x4 footprints
  # are added up: exactly the transposed conv's FLOPs, where the sub-pixel form computes
  # (h + 1)^2 / h^2 as many (4x at 1x1, 2.25x at 2x2).
  b, h, w, cin = x.shape
  cout = kernel.shape[-1]
  y = x.reshape(-1, cin) @ jnp.transpose(kernel, (2, 0, 1, 3)).reshape(cin, 16 * cout)
  y = _overlap_add(y.reshape(b, h, w, 4, 4, cout), 1, 3)              # [B, h, 2, w, 4, C]
  return _overlap_add(y, 3, 4).reshape(b, 2 * h, 2 * w, cout)


def _transposed_upsample(x: jax.Array, kernel: jax.Array) -> jax.Array:
  # PyTorch's ConvTranspose2d(k=4, s=2, p=1) is a convolution of the 2x-dilated input with the
  # spatially flipped kernel and padding k - 1 - p = 2.
  return jax.lax.conv_general_dilated(
      x, kernel[::-1, ::-1], (1, 1), ((2, 2), (2, 2)), lhs_dilation=(2, 2),
      dimension_numbers=("NHWC", "HWIO", "NHWC"))


_UPSAMPLE = {"subpixel": _subpixel_upsample, "transpose": _transposed_upsample,
             "col2im": _col2im_upsample}


class UpConv(nn.Module):
  """2x upsampling with the semantics of PyTorch's `ConvTranspose2d(k=4, s=2, p=1)`.

  `out[2m + r] = sum_t x[m + r - 1 + t] * K[3 - r - 2t]` (per axis): each output phase is a 2x2
  convolution. `impl="subpixel"` computes all four phases as one 2x2 conv with 4x the output
  channels over (h + 1) x (w + 1) pixels followed by depth-to-space: its kernel gradient is a
  plain convolution, ~12x faster on XLA:CPU than that of the dilated form (`"transpose"`).
  `"col2im"` multiplies each input pixel by all 16 taps and adds the overlapping footprints:
  only matmuls and slices, with the transposed conv's exact FLOPs, ~2x faster than
  `"subpixel"` for the pix2pix U-Net on XLA:CPU (docs/performance.md). `"auto"` picks
  `"col2im"` on CPU and `"subpixel"` elsewhere. All read the same `kernel` [4, 4, Cin, Cout]
  (PyTorch layout transposed to HWIO without a flip), so checkpoints load either way.
  """
  features: int
  use_bias: bool = False
  impl: str = "subpixel"
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", conv_init, (4, 4, x.shape[-1], self.features), jnp.float32)
    x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
    impl = self.impl
    if impl == "auto":
      impl = "col2im" if jax.default_backend() == "cpu" else "subpixel"
    if impl not in _UPSAMPLE:
      raise ValueError(f"model.upsample must be one of {sorted(_UPSAMPLE) + ['auto']}, got {impl!r}")
    y = _UPSAMPLE[impl](x, kernel)
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32).astype(self.dtype)
    return y


def output_activation(name: str, x: jax.Array) -> jax.Array:
  """Maps the last layer to ab in [-1, 1]: tanh, or sigmoid rescaled (seed 000's choice)."""
  if name == "tanh":
    return jnp.tanh(x)
  if name == "sigmoid":
    return 2.0 * jax.nn.sigmoid(x) - 1.0
  raise ValueError(f"model.output_activation must be 'tanh' or 'sigmoid', got {name!r}")


leaky_relu = functools.partial(nn.leaky_relu, negative_slope=0.2)
