"""colorjax.metrics against scikit-image and NumPy formulas, on random uint8 photos."""

import statistics

import jax.numpy as jnp
import numpy as np
import pytest
from skimage import color as skcolor
from skimage import metrics as skmetrics

from colorjax import metrics


def _pair(shape=(3, 24, 20, 3), noise=12, seed=0):
  rng = np.random.default_rng(seed)
  true = rng.integers(0, 256, shape, dtype=np.uint8)
  pred = np.clip(true.astype(int) + rng.integers(-noise, noise + 1, shape), 0, 255).astype(np.uint8)
  return pred, true


def test_psnr_ssim_mse_match_scikit_image_and_identical_photos_stay_finite():
  pred, true = _pair()
  pred[1] = true[1]
  got = {k: np.asarray(v) for k, v in metrics.psnr_ssim_mse(jnp.asarray(pred), jnp.asarray(true)).items()}
  for i in (0, 2):
    assert got["psnr"][i] == pytest.approx(skmetrics.peak_signal_noise_ratio(true[i], pred[i], data_range=255), abs=1e-3)
    assert got["ssim"][i] == pytest.approx(skmetrics.structural_similarity(
        true[i], pred[i], channel_axis=-1, data_range=255, gaussian_weights=True, sigma=1.5,
        use_sample_covariance=False), abs=1e-4)
    assert got["mse"][i] == pytest.approx(skmetrics.mean_squared_error(true[i], pred[i]), rel=1e-5)
  assert got["psnr"][1] == metrics.MAX_PSNR and got["ssim"][1] == pytest.approx(1.0) and got["mse"][1] == 0


def test_ssim_refuses_images_smaller_than_its_window():
  pred, true = _pair((1, 10, 32, 3))
  with pytest.raises(ValueError, match="at least 11x11 px .* got 10x32"):
    metrics.psnr_ssim_mse(jnp.asarray(pred), jnp.asarray(true))


def test_pixel_accuracy_is_the_share_of_pixels_in_the_true_ab_bin():
  pred, true = _pair((3, 16, 16, 3))
  pred[1] = true[1]
  edges = np.linspace(-1, 1, 17)  # 16 bins per axis over +-110 Lab units

  def classes(rgb):
    bins = np.clip(np.digitize(skcolor.rgb2lab(rgb / 255.0)[..., 1:] / 110.0, edges) - 1, 0, 15)
    return bins[..., 0] * 16 + bins[..., 1]

  want = [np.mean(classes(p) == classes(t)) for p, t in zip(pred, true)]
  got = np.asarray(metrics.pixel_accuracy(jnp.asarray(pred), jnp.asarray(true)))
  np.testing.assert_allclose(got, want, atol=1 / 256 + 1e-9)  # a pixel on a bin edge may fall either way
  assert got[1] == 1.0 and 0 < got[0] < 1


def test_paired_gain_is_the_mean_difference_with_its_95_percent_interval():
  rng = np.random.default_rng(0)
  baseline = rng.normal(23, 3, 200)
  scores = baseline + rng.normal(0.5, 1.0, 200)
  mean, half = metrics.paired_gain(scores, baseline)
  d = list(scores - baseline)
  assert mean == pytest.approx(statistics.mean(d)) and half == pytest.approx(1.9720 * statistics.stdev(d) / 200 ** 0.5, rel=1e-4)
  few = metrics.paired_gain(scores[:5], baseline[:5])  # t(0.975, 4) = 2.7764 from the tables, not 1.96
  assert few[1] == pytest.approx(2.7764 * statistics.stdev(d[:5]) / 5 ** 0.5, rel=1e-4)
  assert metrics.format_gain((mean, half)) == f"{mean:+.2f} ± {half:.2f}" and metrics.format_gain((0.25, float("nan"))) == "+0.25"
  assert metrics.paired_gain(baseline + 0.5, baseline) == pytest.approx((0.5, 0.0))  # the same shift on every photo


def _hasler_susstrunk(rgb):
  """Colourfulness M = sigma_rgyb + 0.3 mu_rgyb (Hasler & Süsstrunk 2003, eq. 3), in float64."""
  r, g, b = rgb.astype(np.float64).transpose(2, 0, 1)
  rg, yb = r - g, 0.5 * (r + g) - b
  return np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean())


def test_colorfulness_is_hasler_and_susstrunks_formula():
  pred, _ = _pair((4, 24, 20, 3), noise=60)
  pred[1] = np.repeat(pred[1, ..., :1], 3, -1)   # gray: rg = yb = 0 everywhere
  pred[2] = (200, 40, 10)                         # one flat colour: no spread, only the mean term
  got = np.asarray(metrics.colorfulness(jnp.asarray(pred)))
  np.testing.assert_allclose(got, [_hasler_susstrunk(p) for p in pred], rtol=1e-5)
  assert got[1] == 0.0
  assert got[2] == pytest.approx(0.3 * np.hypot(200 - 40, 0.5 * (200 + 40) - 10), rel=1e-6)
