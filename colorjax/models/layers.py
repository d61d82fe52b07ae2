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

Dtype = Any

conv_init = nn.initializers.normal(0.02)


def bn_scale_init(key: jax.Array, shape: tuple[int, ...], dtype: Dtype = jnp.float32) -> jax.Array:
  return 1.0 + 0.02 * jax.random.normal(key, shape, dtype)


class BatchNorm(nn.Module):
  """PyTorch's BatchNorm2d: momentum 0.1, eps 1e-5, and a running variance of the unbiased
  batch variance (n / (n - 1) times the one it normalises by). flax's nn.BatchNorm keeps the
  biased one: at the pix2pix U-Net's 2x2 layers (n = 64 pixels at batch 16) eval activations
  came out 0.8 % larger than PyTorch's, 3.3 % with four micro-batches. Otherwise its maths,
  op for op (statistics in float32, E[x^2] - E[x]^2), and its variables, so checkpoints and
  converted weights load unchanged.

  Inside `jax.jit` over a batch sharded on the `data` axis the statistics are those of the
  global batch, so no `axis_name` is needed (see docs/design.md).
  """
  use_running_average: bool
  dtype: Dtype = jnp.float32
  momentum: float = 0.9
  epsilon: float = 1e-5

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    features = (x.shape[-1],)
    ra_mean = self.variable("batch_stats", "mean", jnp.zeros, features, jnp.float32)
    ra_var = self.variable("batch_stats", "var", jnp.ones, features, jnp.float32)
    scale = self.param("scale", bn_scale_init, features, jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, features, jnp.float32)
    if self.use_running_average:
      mean, var = ra_mean.value, ra_var.value
    else:
      stats = x.astype(jnp.promote_types(self.dtype, jnp.float32))
      axes = tuple(range(x.ndim - 1))
      mean = stats.mean(axes)
      var = jnp.maximum(0.0, jnp.square(stats).mean(axes) - jnp.square(mean))
      if not self.is_initializing():
        n = x.size // x.shape[-1]
        ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
        ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var * (n / max(n - 1, 1))
    y = (x - mean) * (jax.lax.rsqrt(var + self.epsilon) * scale) + bias
    return y.astype(self.dtype)


def batch_norm(train: bool, dtype: Dtype, name: str | None = None) -> BatchNorm:
  """`BatchNorm` for a model computing in `dtype`."""
  return BatchNorm(use_running_average=not train, dtype=between_matmuls(dtype), name=name)


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


def _out_size(n: int, k: int, stride: int, pad: tuple[int, int]) -> int:
  return (n + sum(pad) - k) // stride + 1


def _phases(x: jax.Array, strides: tuple[int, int],
            padding: tuple[tuple[int, int], tuple[int, int]], channels_major: bool) -> jax.Array:
  """NHWC `x` padded and split into its stride phases, phases major: [sh, sw, B, Hs, Ws, C]
  ([sh, sw, C, B, Hs, Ws] if `channels_major`). Every tap of a strided conv is then a window
  of contiguous pixels, not every s-th one: one copy of x instead of strided reads per tap
  (pix2pix 256 px step on AMX 5.94 -> 4.99 s)."""
  if channels_major:
    x = jnp.transpose(x, (3, 0, 1, 2))
  rows = 2 if channels_major else 1
  (sh, sw), ((pt, pb), (pl, pr)) = strides, padding
  h, w = x.shape[rows] + pt + pb, x.shape[rows + 1] + pl + pr
  hs, ws = -(-h // sh), -(-w // sw)
  pads = [(0, 0)] * x.ndim
  pads[rows], pads[rows + 1] = (pt, pb + hs * sh - h), (pl, pr + ws * sw - w)
  x = jnp.pad(x, pads)
  x = x.reshape(x.shape[:rows] + (hs, sh, ws, sw) + x.shape[rows + 2:])
  x = jnp.transpose(x, (rows + 1, rows + 3) + tuple(range(rows)) + (rows, rows + 2)
                    + tuple(range(rows + 4, x.ndim)))
  # Stride 1: the pad fuses into the taps; strided: materialize the phases (once, not per tap).
  return x if strides == (1, 1) else jax.lax.optimization_barrier(x)


def _taps(x: jax.Array, kh: int, kw: int, strides: tuple[int, int],
          padding: tuple[tuple[int, int], tuple[int, int]], channels_major: bool) -> list[jax.Array]:
  """The kh * kw windows of NHWC `x` a conv multiplies, [B, Ho, Wo, C] ([C, B, Ho, Wo])."""
  (sh, sw), ph = strides, _phases(x, strides, padding, channels_major)
  ho = _out_size(x.shape[1], kh, sh, padding[0])
  wo = _out_size(x.shape[2], kw, sw, padding[1])
  rows = (slice(None),) * (2 if channels_major else 1)
  return [ph[(i % sh, j % sw) + rows + (slice(i // sh, i // sh + ho), slice(j // sw, j // sw + wo))]
          for i in range(kh) for j in range(kw)]


def _patches(x: jax.Array, kh: int, kw: int, strides: tuple[int, int],
             padding: tuple[tuple[int, int], tuple[int, int]]) -> jax.Array:
  """[B, Ho, Wo, kh * kw * C]: every output pixel's receptive field, taps major."""
  return jnp.concatenate(_taps(x, kh, kw, strides, padding, channels_major=False), axis=-1)


def _im2col_conv(x: jax.Array, kernel: jax.Array, strides: tuple[int, int],
                 padding: tuple[tuple[int, int], tuple[int, int]]) -> jax.Array:
  kh, kw, _, cout = kernel.shape
  return _patches(x, kh, kw, strides, padding) @ kernel.reshape(-1, cout)


# bfloat16 on CPU (`dtype="bfloat16"`; "auto" picks it on CPUs with AMX, Intel Sapphire
# Rapids and later). XLA:CPU multiplies bfloat16 matrices into float32 at ~1.4 TFLOP/s there,
# 5x its float32 rate, but only in the plain [M, K] @ [K, N] layout with a float32 result: a
# bfloat16 result or a transposed operand (what autodiff of a matmul or a convolution gives
# the gradients) falls back to 0.1-0.3 TFLOP/s, and XLA's bfloat16 convolutions are no faster
# than float32 ones. XLA:CPU also has no bfloat16 elementwise arithmetic: it converts to
# float32 and back around every op. So on CPU "bfloat16" means bfloat16 matmul operands with
# float32 accumulation, and everything between the matmuls (batch norm, activations, skips)
# in float32; the forward and both gradients of each convolution (but the narrowest, below)
# are matmuls in the fast layout: the kernel gradient from a patch matrix built transposed (a transpose of
# the patch matrix itself is folded back into the slow layout by XLA), the input gradient as a
# convolution of the output gradient (docs/performance.md).


# Building the patch matrices costs memory traffic in proportion to the matmul's rows times
# its depth, the matmul FLOPs in proportion to that times the output channels: a layer with
# 1-2 output channels (the PatchGAN's logits, the U-Net's last upsampling) gains nothing and
# loses its patch traffic, so narrow layers keep the float32 path. Measured on the pix2pix
# step (docs/performance.md): 64, 32 equal; 1 and 128 slower at 256 px.
BF16_MIN_FEATURES = 64


def bf16_matmuls_on_cpu(dtype: Dtype) -> bool:
  return jax.default_backend() == "cpu" and jnp.dtype(dtype) == jnp.bfloat16


def between_matmuls(dtype: Dtype) -> Dtype:
  """The dtype of activations, batch norm and skips for compute `dtype` (float32 for CPU bfloat16)."""
  return jnp.float32 if bf16_matmuls_on_cpu(dtype) else dtype


def _dot_bf16(a: jax.Array, b: jax.Array, contract: tuple[int, int]) -> jax.Array:
  return jax.lax.dot_general(a.astype(jnp.bfloat16), b.astype(jnp.bfloat16),
                             (((contract[0],), (contract[1],)), ((), ())),
                             preferred_element_type=jnp.float32)


@jax.custom_vjp
def _matmul_bf16(a: jax.Array, b: jax.Array) -> jax.Array:
  """[..., K] @ [K, N] of bfloat16-rounded operands, float32 result; so are its gradients
  (autodiff would multiply the float32 cotangent by an upcast operand)."""
  return _dot_bf16(a, b, (a.ndim - 1, 0))


def _matmul_bf16_fwd(a, b):
  return _matmul_bf16(a, b), (a, b)


def _matmul_bf16_bwd(residuals, g):
  a, b = residuals
  a2, g2 = a.reshape(-1, a.shape[-1]), g.reshape(-1, g.shape[-1])
  return (_dot_bf16(g, b, (g.ndim - 1, 1)).astype(a.dtype),
          _dot_bf16(a2, g2, (0, 0)).astype(b.dtype))


_matmul_bf16.defvjp(_matmul_bf16_fwd, _matmul_bf16_bwd)


def _patch_matmul(x: jax.Array, kernel: jax.Array, strides: tuple[int, int],
                  padding: tuple[tuple[int, int], tuple[int, int]]) -> jax.Array:
  """The conv as float32 patches times the kernel in `_matmul_bf16`: differentiable."""
  kh, kw, _, cout = kernel.shape
  return _matmul_bf16(_patches(x, kh, kw, strides, padding), kernel.reshape(-1, cout))


# XLA:CPU moves bfloat16 data in float32 (it converts around every op), so patch matrices are
# built from the bfloat16 bits as uint16: half the bytes of float32 patches and no conversion
# pass over them (not differentiable: only inside `bf16_conv`). 256 px step: 9.7 -> 7.9 s.
def _to_bits(x: jax.Array) -> jax.Array:
  return jax.lax.bitcast_convert_type(x.astype(jnp.bfloat16), jnp.uint16)


def _from_bits(x: jax.Array) -> jax.Array:
  return jax.lax.bitcast_convert_type(x, jnp.bfloat16)


def _forward_conv(bits: jax.Array, kernel: jax.Array, strides: tuple[int, int],
                  padding: tuple[tuple[int, int], tuple[int, int]]) -> jax.Array:
  """The conv of an input given as `_to_bits`, float32 result."""
  kh, kw, _, cout = kernel.shape
  return _dot_bf16(_from_bits(_patches(bits, kh, kw, strides, padding)), kernel.reshape(-1, cout),
                   (3, 0))


def _transposed_patches(x: jax.Array, kh: int, kw: int, strides: tuple[int, int],
                        padding: tuple[tuple[int, int], tuple[int, int]]) -> jax.Array:
  """`_patches(...)` as a [kh * kw * C, B * Ho * Wo] matrix, laid out that way in memory."""
  p = jnp.concatenate(_taps(x, kh, kw, strides, padding, channels_major=True), axis=0)
  return p.reshape(p.shape[0], -1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def bf16_conv(x: jax.Array, kernel: jax.Array, strides: tuple[int, int],
              padding: tuple[tuple[int, int], tuple[int, int]]) -> jax.Array:
  """NHWC x HWIO convolution of bfloat16-rounded operands, float32 result and gradients."""
  return _forward_conv(_to_bits(x), kernel, strides, padding)


def _bf16_conv_fwd(x, kernel, strides, padding):
  return bf16_conv(x, kernel, strides, padding), (x, kernel)


def _bf16_conv_bwd(strides, padding, residuals, g):
  x, kernel = residuals
  kh, kw, _, cout = kernel.shape
  gbits = _to_bits(g)
  dk = _dot_bf16(_from_bits(_transposed_patches(_to_bits(x), kh, kw, strides, padding)),
                 _from_bits(gbits).reshape(-1, cout), (1, 0))
  (pt, _), (pl, _) = padding
  if (strides == (2, 2) and (kh, kw) == (4, 4) and padding == ((1, 1), (1, 1))
      and x.shape[1] % 2 == 0 and x.shape[2] % 2 == 0):
    # The input gradient of a 4x4 stride-2 conv is PyTorch's ConvTranspose2d(k=4, s=2, p=1)
    # of g with the same kernel, in/out swapped: the sub-pixel form, a 2x2 conv.
    dx = _subpixel_upsample(gbits, jnp.transpose(kernel, (0, 1, 3, 2)), _forward_conv)
  else:
    # dx[i] = sum_t g'[i + p_lo - t] k[t], g' = g dilated by the stride: a stride-1 conv of g'
    # (zeros interleaved, a crop or pad at the far end) with the flipped kernel, in/out swapped.
    far = lambda n, lo, s, n_out: n + lo - (n_out - 1) * s - 1
    gd = jax.lax.pad(gbits, jnp.zeros((), gbits.dtype), [
        (0, 0, 0),
        (kh - 1 - pt, far(x.shape[1], pt, strides[0], g.shape[1]), strides[0] - 1),
        (kw - 1 - pl, far(x.shape[2], pl, strides[1], g.shape[2]), strides[1] - 1),
        (0, 0, 0)])
    dx = _forward_conv(gd, jnp.transpose(kernel[::-1, ::-1], (0, 1, 3, 2)), (1, 1), ((0, 0), (0, 0)))
  return dx.astype(x.dtype), dk.reshape(kernel.shape).astype(kernel.dtype)


bf16_conv.defvjp(_bf16_conv_fwd, _bf16_conv_bwd)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, precision=None,
                         preferred_element_type=None) -> jax.Array:
  """`lax.conv_general_dilated`, computed as matmuls where XLA:CPU is slow (above).

  `precision="bfloat16"` on CPU: `bf16_conv` of float32 operands.
  """
  plain = (jax.default_backend() == "cpu" and not isinstance(padding, str)
           and all(d in (None, 1) for d in tuple(lhs_dilation or ()) + tuple(rhs_dilation or ()))
           and feature_group_count == 1 and dimension_numbers in (None, _NHWC, ("NHWC", "HWIO", "NHWC")))
  if plain:
    strides, padding = tuple(window_strides), tuple(map(tuple, padding))
    kh, kw, cin, cout = rhs.shape
    ho = _out_size(lhs.shape[1], kh, strides[0], padding[0])
    wo = _out_size(lhs.shape[2], kw, strides[1], padding[1])
    if precision == "bfloat16" and cout >= BF16_MIN_FEATURES:
      if lhs.shape[0] * ho * wo < kh * kw * cin:
        # Fewer patch rows than kernel entries per output channel: the kernel is the big
        # operand, and the transposed copies `bf16_conv`'s gradients make of it (XLA:CPU
        # copies at ~0.5 GB/s) would cost more than autodiff's slower matmul layouts.
        return _patch_matmul(lhs, rhs, strides, padding)
      return bf16_conv(lhs, rhs, strides, padding)
    strided = (strides == (2, 2) and cin >= _IM2COL_MIN_STRIDED_CHANNELS
               and ho * wo >= _IM2COL_MIN_STRIDED_PIXELS)
    if ho * wo <= _IM2COL_MAX_PIXELS or kh * kw <= _IM2COL_MAX_TAPS or strided:
      return _im2col_conv(lhs, rhs, strides, padding)
  return jax.lax.conv_general_dilated(
      lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
      feature_group_count, precision=precision, preferred_element_type=preferred_element_type)


def conv(features: int, kernel: int, stride: int = 1, padding: int | None = None,
         use_bias: bool = False, dtype: Dtype = jnp.float32, name: str | None = None) -> nn.Conv:
  """A conv with PyTorch-style symmetric padding (default: kernel // 2)."""
  pad = kernel // 2 if padding is None else padding
  return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                 padding=((pad, pad), (pad, pad)), use_bias=use_bias, kernel_init=conv_init,
                 conv_general_dilated=conv_general_dilated, name=name, **conv_dtype(dtype))


def conv_dtype(dtype: Dtype) -> dict[str, Any]:
  """`nn.Conv`'s dtype arguments for compute `dtype`: on CPU bfloat16 is `bf16_conv` (above)."""
  if bf16_matmuls_on_cpu(dtype):
    return {"dtype": between_matmuls(dtype), "precision": "bfloat16"}
  return {"dtype": dtype}


# Output phase r (0: even rows, 1: odd rows) and 2x2 tap t of the sub-pixel form use row
# 3 - r - 2t of the 4x4 transposed-conv kernel (derivation in `UpConv`'s docstring).
def _plain_conv(x: jax.Array, kernel: jax.Array, strides: tuple[int, int],
                padding: tuple[tuple[int, int], tuple[int, int]]) -> jax.Array:
  return conv_general_dilated(x, kernel, strides, padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _subpixel_upsample(x: jax.Array, kernel: jax.Array, conv_fn=_plain_conv) -> jax.Array:
  b, h, w, cin = x.shape
  cout = kernel.shape[-1]
  # Row 3 - r - 2t of the kernel is row 2t + r of the flipped one: a reshape, not a gather
  # (whose gradient, a scatter-add, cost more than the conv at 64 px).
  k2 = kernel[::-1, ::-1].reshape(2, 2, 2, 2, cin, cout)   # [th, r, tw, s, Cin, Cout]
  k2 = jnp.transpose(k2, (0, 2, 4, 1, 3, 5)).reshape(2, 2, cin, 4 * cout)
  y = conv_fn(x, k2, (1, 1), ((1, 1), (1, 1)))
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


def _bf16_upsample(x: jax.Array, kernel: jax.Array) -> jax.Array:
  b, h, w, cin = x.shape
  if b * (h + 1) * (w + 1) >= 4 * cin:
    # The sub-pixel form's one 2x2 conv, as `bf16_conv` (col2im's matmul is 16 * Cout
    # columns wide, a slow shape for AMX).
    return _subpixel_upsample(x, kernel, bf16_conv)
  # Few pixels, a big kernel: the patch matmul's own gradients (see `conv_general_dilated`).
  return _subpixel_upsample(x, kernel, _patch_matmul)


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
  `"col2im"` on CPU and `"subpixel"` elsewhere; with bfloat16 on CPU, layers of
  `BF16_MIN_FEATURES`+ outputs take the sub-pixel form in bfloat16 matmuls whatever the impl
  (`_bf16_upsample`), narrower ones the impl in float32. All read the same `kernel` [4, 4, Cin, Cout]
  (PyTorch layout transposed to HWIO without a flip), so checkpoints load either way.
  """
  features: int
  use_bias: bool = False
  impl: str = "subpixel"
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", conv_init, (4, 4, x.shape[-1], self.features), jnp.float32)
    impl = self.impl
    if impl == "auto":
      impl = "col2im" if jax.default_backend() == "cpu" else "subpixel"
    if impl not in _UPSAMPLE:
      raise ValueError(f"model.upsample must be one of {sorted(_UPSAMPLE) + ['auto']}, got {impl!r}")
    upsample = _UPSAMPLE[impl]
    if bf16_matmuls_on_cpu(self.dtype) and self.features >= BF16_MIN_FEATURES:
      upsample = _bf16_upsample
    dtype = between_matmuls(self.dtype)
    y = upsample(x.astype(dtype), kernel.astype(dtype))
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32).astype(dtype)
    return y


def output_activation(name: str, x: jax.Array) -> jax.Array:
  """Maps the last layer to ab in [-1, 1]: tanh, or sigmoid rescaled (seed 000's choice)."""
  if name == "tanh":
    return jnp.tanh(x)
  if name == "sigmoid":
    return 2.0 * jax.nn.sigmoid(x) - 1.0
  raise ValueError(f"model.output_activation must be 'tanh' or 'sigmoid', got {name!r}")


leaky_relu = functools.partial(nn.leaky_relu, negative_slope=0.2)
