"""colorjax.color against scikit-image's rgb2lab / lab2rgb, in NumPy and in JAX."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from skimage import color as skcolor

from colorjax import color

EDGES = np.array([[0, 0, 0], [1, 1, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 1, 1], [1, 0, 1],
                  [1, 1, 0], [0.04045, 0.04045, 0.04045], [0.0031308, 0.5, 1e-6], [0.5, 0.5, 0.5]])


def _rgb_samples(n=4000):
  rng = np.random.default_rng(0)
  return np.concatenate([rng.random((n, 3)), EDGES])


@pytest.mark.parametrize("xp", [np, jnp], ids=["numpy", "jax"])
def test_rgb_to_lab_matches_skimage(xp):
  rgb = _rgb_samples()
  want = skcolor.rgb2lab(rgb)
  got = np.asarray(color.rgb_to_lab(xp.asarray(rgb, dtype=xp.float32), xp))
  np.testing.assert_allclose(got, want, atol=2e-3)


@pytest.mark.parametrize("xp", [np, jnp], ids=["numpy", "jax"])
def test_lab_to_rgb_matches_skimage_including_out_of_gamut(xp):
  rng = np.random.default_rng(1)
  lab = np.stack([rng.uniform(0, 100, 4000), rng.uniform(-128, 127, 4000),
                  rng.uniform(-128, 127, 4000)], axis=-1)
  lab = np.concatenate([lab, skcolor.rgb2lab(EDGES)])
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # skimage warns about negative Z values it clips
    want = skcolor.lab2rgb(lab)
  got = np.asarray(color.lab_to_rgb(xp.asarray(lab, dtype=xp.float32), xp))
  np.testing.assert_allclose(got, want, atol=2e-5)


@pytest.mark.parametrize("xp", [np, jnp], ids=["numpy", "jax"])
def test_integer_lab_is_read_as_lab_and_integer_rgb_is_refused(xp):
  lab = np.array([[50, 0, 0], [53, 80, 67], [32, 79, -108]])
  got = np.asarray(color.lab_to_rgb(xp.asarray(lab), xp))
  np.testing.assert_allclose(got, skcolor.lab2rgb(lab.astype(np.float64)), atol=2e-5)
  with pytest.raises(TypeError, match="uint8 photos: rgb_uint8_to_model"):
    color.rgb_to_lab(xp.asarray([[255, 255, 255]], dtype=xp.uint8), xp)


def test_round_trip_through_model_space_is_lossless_in_uint8():
  rgb = (np.random.default_rng(2).random((64, 64, 3)) * 255).astype(np.uint8)
  l, ab = color.rgb_uint8_to_model(rgb, np)
  assert l.min() >= -1 and l.max() <= 1 and np.abs(ab).max() <= 1
  np.testing.assert_array_equal(color.to_uint8(color.model_to_rgb(l, ab, np), np), rgb)


def test_jax_colour_maths_is_jittable_and_has_finite_gradients():
  rgb = jnp.asarray(_rgb_samples(100), jnp.float32)
  grad = jax.jit(jax.grad(lambda x: jnp.sum(color.rgb_to_lab(x))))(rgb)
  assert np.isfinite(np.asarray(grad)).all()
  lab = color.rgb_to_lab(rgb)
  grad = jax.jit(jax.grad(lambda x: jnp.sum(color.lab_to_rgb(x))))(lab)
  assert np.isfinite(np.asarray(grad)).all()


def test_normalisation_ranges():
  lab = skcolor.rgb2lab(EDGES)
  l, ab = color.normalize_lab(lab, np)
  np.testing.assert_allclose(l[[0, 1], 0], [-1, 1], atol=1e-6)
  assert np.abs(ab).max() < 1.0  # the whole sRGB gamut fits a tanh output
  np.testing.assert_allclose(color.denormalize_lab(l, ab, np), lab, atol=1e-9)
