"""Fréchet Inception Distance (Heusel et al. 2017) of colorized photos against the real ones.

FID compares the mean and covariance of Inception pool3 features (2048-d) of two image sets.
Published FIDs (seed 004 reports 72.47) use the TensorFlow FID Inception network; its PyTorch
port is pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` (github.com/mseitzer/pytorch-fid,
release `fid_weights`). colorjax neither ships nor downloads it: fetch that file once and pass
it, or the same state dict as `.npz` / `.safetensors`, to `colorjax.evaluate --fid-weights`.
`InceptionV3` below is that network in Flax, with the same module names, so the file loads as
it is (`colorjax.models.pretrained.convert`).

FID is biased upwards on small sets (under ~2048 photos the covariance is rank-deficient):
compare FIDs only at equal photo counts.
"""

from __future__ import annotations

import functools
import os
import warnings
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg

from colorjax.models import pretrained

FeatureFn = Callable[[np.ndarray], np.ndarray]  # uint8 RGB [B, H, W, 3] -> features [B, D]
INPUT_SIZE = 299


class FeatureStats:
  """Running mean and covariance of feature vectors, accumulated in float64 batch by batch."""

  def __init__(self):
    self.n, self.sum, self.outer = 0, 0.0, 0.0

  def update(self, features: np.ndarray) -> None:
    f = np.asarray(features, np.float64)
    self.n += len(f)
    self.sum = self.sum + f.sum(axis=0)
    self.outer = self.outer + f.T @ f

  def mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
    """Mean [D] and unbiased covariance [D, D] (as `np.cov`, what pytorch-fid uses)."""
    if self.n < 2:
      raise ValueError(f"FID needs at least 2 images, got {self.n}")
    mu = self.sum / self.n
    return mu, (self.outer - self.n * np.outer(mu, mu)) / (self.n - 1)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
  """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)), the distance of two Gaussians.

  As pytorch-fid: a singular product gets `eps` added to both diagonals, and the imaginary
  round-off of `sqrtm` is dropped. Fewer images than features make the product singular and
  that round-off large off the diagonal, but the trace, all that is used, stays exact; only
  an imaginary diagonal above 1e-3 is an error.
  """
  diff = mu1 - mu2
  with warnings.catch_warnings():  # "Matrix is singular": handled here, as pytorch-fid's disp=False does
    warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
      offset = np.eye(len(mu1)) * eps
      covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
  if np.iscomplexobj(covmean):
    if np.abs(np.diagonal(covmean).imag).max() > 1e-3:
      raise ValueError(f"the square root of the covariances' product has an imaginary diagonal "
                       f"(up to {np.abs(np.diagonal(covmean).imag).max():.3g}): no FID from these statistics")
    covmean = covmean.real
  return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def image_stats(features: FeatureFn, images: np.ndarray, batch_size: int) -> FeatureStats:
  """The feature statistics of uint8 RGB `images` [N, H, W, 3], `batch_size` at a time."""
  stats = FeatureStats()
  for start in range(0, len(images), batch_size):
    stats.update(features(images[start:start + batch_size]))
  return stats


def fid(real: FeatureStats, fake: FeatureStats) -> float:
  """FID of the images behind `fake` against those behind `real` (lower is closer)."""
  return frechet_distance(*real.mean_cov(), *fake.mean_cov())


class BasicConv(nn.Module):
  """torchvision's BasicConv2d: conv without bias, BatchNorm (eps 1e-3, running stats), ReLU."""
  features: int
  kernel: tuple[int, int] = (1, 1)
  stride: int = 1
  padding: tuple[int, int] = (0, 0)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    (ph, pw), s = self.padding, self.stride
    x = nn.Conv(self.features, self.kernel, (s, s), ((ph, ph), (pw, pw)), use_bias=False, name="conv")(x)
    return nn.relu(nn.BatchNorm(use_running_average=True, epsilon=1e-3, name="bn")(x))


def _conv(name: str, features: int, kernel: int | tuple[int, int] = 1, stride: int = 1,
          padding: int | tuple[int, int] = 0) -> BasicConv:
  pair = lambda v: (v, v) if isinstance(v, int) else v
  return BasicConv(features, pair(kernel), stride, pair(padding), name=name)


def _avg_pool(x: jax.Array) -> jax.Array:
  # TensorFlow's average pool leaves the padding out of the mean (pytorch-fid's patch).
  return nn.avg_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1)), count_include_pad=False)


def _max_pool(x: jax.Array, stride: int = 2) -> jax.Array:
  return nn.max_pool(x, (3, 3), (stride, stride), "VALID" if stride == 2 else ((1, 1), (1, 1)))


class InceptionA(nn.Module):
  pool_features: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b5 = _conv("branch5x5_2", 64, 5, padding=2)(_conv("branch5x5_1", 48)(x))
    b3 = _conv("branch3x3dbl_1", 64)(x)
    b3 = _conv("branch3x3dbl_3", 96, 3, padding=1)(_conv("branch3x3dbl_2", 96, 3, padding=1)(b3))
    pool = _conv("branch_pool", self.pool_features)(_avg_pool(x))
    return jnp.concatenate([_conv("branch1x1", 64)(x), b5, b3, pool], axis=-1)


class InceptionB(nn.Module):
  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b3 = _conv("branch3x3", 384, 3, stride=2)(x)
    d = _conv("branch3x3dbl_2", 96, 3, padding=1)(_conv("branch3x3dbl_1", 64)(x))
    d = _conv("branch3x3dbl_3", 96, 3, stride=2)(d)
    return jnp.concatenate([b3, d, _max_pool(x)], axis=-1)


class InceptionC(nn.Module):
  channels_7x7: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c7, row, col = self.channels_7x7, dict(kernel=(1, 7), padding=(0, 3)), dict(kernel=(7, 1), padding=(3, 0))
    b7 = _conv("branch7x7_1", c7)(x)
    b7 = _conv("branch7x7_3", 192, **col)(_conv("branch7x7_2", c7, **row)(b7))
    d = _conv("branch7x7dbl_1", c7)(x)
    d = _conv("branch7x7dbl_3", c7, **row)(_conv("branch7x7dbl_2", c7, **col)(d))
    d = _conv("branch7x7dbl_5", 192, **row)(_conv("branch7x7dbl_4", c7, **col)(d))
    pool = _conv("branch_pool", 192)(_avg_pool(x))
    return jnp.concatenate([_conv("branch1x1", 192)(x), b7, d, pool], axis=-1)


class InceptionD(nn.Module):
  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b3 = _conv("branch3x3_2", 320, 3, stride=2)(_conv("branch3x3_1", 192)(x))
    b7 = _conv("branch7x7x3_1", 192)(x)
    b7 = _conv("branch7x7x3_3", 192, (7, 1), padding=(3, 0))(_conv("branch7x7x3_2", 192, (1, 7), padding=(0, 3))(b7))
    b7 = _conv("branch7x7x3_4", 192, 3, stride=2)(b7)
    return jnp.concatenate([b3, b7, _max_pool(x)], axis=-1)


class InceptionE(nn.Module):
  """The last blocks; the FID network's final one max-pools its pool branch (pytorch-fid's E_2)."""
  pool: str = "avg"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    row, col = dict(kernel=(1, 3), padding=(0, 1)), dict(kernel=(3, 1), padding=(1, 0))
    b3 = _conv("branch3x3_1", 384)(x)
    b3 = jnp.concatenate([_conv("branch3x3_2a", 384, **row)(b3), _conv("branch3x3_2b", 384, **col)(b3)], -1)
    d = _conv("branch3x3dbl_2", 384, 3, padding=1)(_conv("branch3x3dbl_1", 448)(x))
    d = jnp.concatenate([_conv("branch3x3dbl_3a", 384, **row)(d), _conv("branch3x3dbl_3b", 384, **col)(d)], -1)
    pooled = _avg_pool(x) if self.pool == "avg" else _max_pool(x, stride=1)
    return jnp.concatenate([_conv("branch1x1", 320)(x), b3, d, _conv("branch_pool", 192)(pooled)], -1)


class InceptionV3(nn.Module):
  """pytorch-fid's FID Inception up to pool3: RGB [B, 299, 299, 3] in [-1, 1] -> [B, 2048]."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = _conv("Conv2d_2a_3x3", 32, 3)(_conv("Conv2d_1a_3x3", 32, 3, stride=2)(x))
    x = _max_pool(_conv("Conv2d_2b_3x3", 64, 3, padding=1)(x))
    x = _max_pool(_conv("Conv2d_4a_3x3", 192, 3)(_conv("Conv2d_3b_1x1", 80)(x)))
    for name, pool_features in (("Mixed_5b", 32), ("Mixed_5c", 64), ("Mixed_5d", 64)):
      x = InceptionA(pool_features, name=name)(x)
    x = InceptionB(name="Mixed_6a")(x)
    for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
      x = InceptionC(c7, name=name)(x)
    x = InceptionD(name="Mixed_7a")(x)
    x = InceptionE("avg", name="Mixed_7b")(x)
    x = InceptionE("max", name="Mixed_7c")(x)
    return jnp.mean(x, axis=(1, 2))


def preprocess(rgb_u8: jax.Array) -> jax.Array:
  """uint8 RGB [B, H, W, 3] -> [B, 299, 299, 3] in [-1, 1], resized as pytorch-fid does
  (bilinear, half-pixel centres, no antialiasing)."""
  x = rgb_u8.astype(jnp.float32) / 255.0
  x = jax.image.resize(x, (x.shape[0], INPUT_SIZE, INPUT_SIZE, 3), "bilinear", antialias=False)
  return 2.0 * x - 1.0


@functools.partial(jax.jit, static_argnums=0)
def _features(model: nn.Module, variables: pretrained.Variables, rgb_u8: jax.Array) -> jax.Array:
  return model.apply(variables, preprocess(rgb_u8))


class InceptionFeatures:
  """uint8 RGB [B, H, W, 3] -> pool3 features [B, 2048], with pytorch-fid's weights."""

  def __init__(self, variables: pretrained.Variables):
    self.model, self.variables = InceptionV3(), variables

  @classmethod
  def from_file(cls, path: str | os.PathLike) -> "InceptionFeatures":
    abstract = jax.eval_shape(InceptionV3().init, jax.random.key(0),
                              jax.ShapeDtypeStruct((1, INPUT_SIZE, INPUT_SIZE, 3), jnp.float32))
    try:
      variables = pretrained.convert(pretrained.read_state_dict(path), abstract, ignore=("fc.", "AuxLogits."))
    except ValueError as e:
      raise ValueError(f"{os.fspath(path)} is not pytorch-fid's Inception state dict ({e})") from None
    return cls(variables)

  def __call__(self, rgb_u8: np.ndarray) -> np.ndarray:
    return np.asarray(_features(self.model, self.variables, jnp.asarray(rgb_u8)))
