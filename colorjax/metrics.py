"""Image-quality metrics in the seeds' protocol: RGB uint8 in [0, 255], per image.

PSNR and SSIM come from dm-pix (SSIM with Wang et al.'s settings: 11x11 Gaussian window,
sigma 1.5 — equal to scikit-image's `gaussian_weights=True, use_sample_covariance=False`).
Colourfulness is Hasler & Süsstrunk (2003), the figure that tells sepia from colour. Two
systems on the same photos are compared by their paired gain, with its confidence interval.
"""

from collections.abc import Sequence

import dm_pix
import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats
from clu import metrics

from colorjax import ab_bins, color


MAX_PSNR = 100.0  # dB, for identical images: one would make the mean over photos infinite
SSIM_WINDOW = 11  # px; dm-pix gives meaningless SSIM below it (scikit-image refuses)


def paired_gain(scores: Sequence[float], baseline: Sequence[float]) -> tuple[float, float]:
  """The mean of `scores - baseline` over the same photos, and the half-width of its 95 %
  confidence interval (Student's t; the photos taken as a sample of photos like them): what
  tells a real gain from the luck of which photos were held out. Not the luck of one
  training run: that takes runs with other seeds."""
  d = np.asarray(scores, np.float64) - np.asarray(baseline, np.float64)
  n = len(d)
  half = scipy.stats.t.ppf(0.975, n - 1) * d.std(ddof=1) / np.sqrt(n) if n > 1 else float("nan")
  return float(d.mean()), float(half)


def format_gain(gain: tuple[float, float]) -> str:
  """"+0.59 ± 0.07"; one photo has no interval."""
  return f"{gain[0]:+.2f}" + (f" ± {gain[1]:.2f}" if np.isfinite(gain[1]) else "")


def psnr_ssim_mse(pred_u8: jax.Array, true_u8: jax.Array) -> dict[str, jax.Array]:
  """Per-image PSNR (dB, at most `MAX_PSNR`), SSIM and MSE of uint8 RGB batches [B, H, W, 3]."""
  if min(true_u8.shape[1:3]) < SSIM_WINDOW:
    raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} px (its window), "
                     f"got {true_u8.shape[1]}x{true_u8.shape[2]}")
  pred, true = pred_u8.astype(jnp.float32) / 255.0, true_u8.astype(jnp.float32) / 255.0
  return {
      "psnr": jnp.minimum(dm_pix.psnr(pred, true), MAX_PSNR),
      "ssim": dm_pix.ssim(pred, true),
      "mse": jnp.mean(jnp.square(pred - true), axis=(1, 2, 3)) * 255.0 ** 2,
  }


def colorfulness(rgb_u8: jax.Array) -> jax.Array:
  """Hasler & Süsstrunk colourfulness per image of a uint8 RGB batch [B, H, W, 3]."""
  r, g, b = jnp.moveaxis(rgb_u8.astype(jnp.float32), -1, 0)
  rg, yb = r - g, 0.5 * (r + g) - b
  std = jnp.sqrt(jnp.var(rg, axis=(1, 2)) + jnp.var(yb, axis=(1, 2)))
  mean = jnp.sqrt(jnp.mean(rg, axis=(1, 2)) ** 2 + jnp.mean(yb, axis=(1, 2)) ** 2)
  return std + 0.3 * mean


def pixel_accuracy(pred_u8: jax.Array, true_u8: jax.Array) -> jax.Array:
  """Share of pixels whose delivered colour falls in the true ab class (seed 003), per image."""
  classes = lambda x: ab_bins.ab_to_class(color.rgb_uint8_to_model(x)[1])
  return jnp.mean(classes(pred_u8) == classes(true_u8), axis=(1, 2))


def score_predictions(pred_u8: jax.Array, rgb: jax.Array) -> dict[str, jax.Array]:
  """uint8 RGB predictions and the true crops [B, S, S, 3] -> per-photo scores [B] each.

  Scored in RGB uint8 (the seeds' protocol), beside the a = b = 0 image rebuilt from the same L.
  """
  l, _ = color.rgb_uint8_to_model(rgb)
  gray_u8 = color.to_uint8(color.model_to_rgb(l, jnp.zeros(l.shape[:-1] + (2,))))
  return {**psnr_ssim_mse(pred_u8, rgb), "colorfulness": colorfulness(pred_u8),
          **{f"gray_{k}": v for k, v in psnr_ssim_mse(gray_u8, rgb).items()},
          "gray_colorfulness": colorfulness(gray_u8), "real_colorfulness": colorfulness(rgb)}


_IMAGE_METRICS = ("l1", "psnr", "ssim", "mse", "colorfulness", "gray_psnr", "gray_ssim",
                  "real_colorfulness")

# Held-out metrics of the model and of the no-colour (a = b = 0) baseline; classifiers also
# report the share of pixels whose ab class they got right (seed 003).
EvalMetrics = metrics.Collection.create(
    **{name: metrics.Average.from_output(name) for name in _IMAGE_METRICS})
ClassifierEvalMetrics = metrics.Collection.create(
    **{name: metrics.Average.from_output(name) for name in _IMAGE_METRICS + ("pixel_accuracy",)})
