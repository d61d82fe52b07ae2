"""Losses and ab classes against NumPy formulas and PyTorch's implementations."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from colorjax import ab_bins, losses, models, train
from colorjax import config as config_lib

RNG = np.random.default_rng(0)


def test_regression_losses_match_pytorch():
  torch = pytest.importorskip("torch")
  pred, target = RNG.normal(size=(2, 4, 4, 2)).astype(np.float32), RNG.normal(size=(2, 4, 4, 2)).astype(np.float32)
  tp, tt = torch.from_numpy(pred), torch.from_numpy(target)
  assert float(losses.l1(pred, target)) == pytest.approx(float(torch.nn.L1Loss()(tp, tt)), rel=1e-5)
  assert float(losses.mse(pred, target)) == pytest.approx(float(torch.nn.MSELoss()(tp, tt)), rel=1e-5)
  assert float(losses.smooth_l1(pred, target)) == pytest.approx(float(torch.nn.SmoothL1Loss()(tp, tt)), rel=1e-5)
  logits = RNG.normal(size=(2, 30, 30, 1)).astype(np.float32)
  want = torch.nn.BCEWithLogitsLoss()(torch.from_numpy(logits), torch.ones(2, 30, 30, 1))
  assert float(losses.bce_with_logits(logits, True)) == pytest.approx(float(want), rel=1e-5)


def test_smooth_l1_is_pytorchs_on_raw_lab_ab_not_mse():
  """The configured loss sees ab / 110; its beta is PyTorch's default on Lab ab, 1 Lab unit."""
  torch = pytest.importorskip("torch")
  pred, target = RNG.uniform(-0.5, 0.5, size=(2, 4, 4, 2)), RNG.uniform(-0.5, 0.5, size=(2, 4, 4, 2))
  loss = losses.reconstruction("smooth_l1", smooth_l1_beta=1.0)
  want = torch.nn.SmoothL1Loss()(torch.from_numpy(pred * 110), torch.from_numpy(target * 110)) / 110
  assert float(loss(pred, target)) == pytest.approx(float(want), rel=1e-5)
  # errors of tens of Lab units: L1 less half a unit, not MSE / 2 (0.09 here)
  assert float(loss(pred, target)) == pytest.approx(float(losses.l1(pred, target)) - 0.5 / 110, abs=1e-3)


def test_weighted_losses_and_total_variation_match_numpy():
  pred, target = RNG.normal(size=(2, 5, 6, 2)), RNG.normal(size=(2, 5, 6, 2))
  w = RNG.uniform(0.5, 2, size=(2, 5, 6))
  assert float(losses.l1(pred, target, w)) == pytest.approx(np.mean(np.abs(pred - target) * w[..., None]), rel=1e-6)
  tv = np.abs(np.diff(pred, axis=1)).mean() + np.abs(np.diff(pred, axis=2)).mean()
  assert float(losses.total_variation(jnp.asarray(pred))) == pytest.approx(tv, rel=1e-6)


def test_class_cross_entropy_matches_pytorch_with_class_weights():
  torch = pytest.importorskip("torch")
  logits = RNG.normal(size=(2, 3, 3, 256)).astype(np.float32)
  classes = RNG.integers(0, 256, size=(2, 3, 3))
  w = RNG.uniform(0.1, 3, size=256).astype(np.float32)
  per_pixel = torch.nn.CrossEntropyLoss(weight=torch.from_numpy(w), reduction="none")(
      torch.from_numpy(logits).permute(0, 3, 1, 2), torch.from_numpy(classes))
  got = losses.class_cross_entropy(logits, jnp.asarray(classes), jnp.asarray(w))
  assert float(got) == pytest.approx(float(per_pixel.mean()), rel=1e-5)


def test_ab_classes_tile_the_plane_and_centres_round_trip():
  centers = ab_bins.class_centers()
  assert centers.shape == (256, 2)
  np.testing.assert_array_equal(ab_bins.ab_to_class(centers, np), np.arange(256))
  assert ab_bins.ab_to_class(np.array([[-1.0, -1.0], [1.0, 1.0], [-5, 5]]), np).tolist() == [0, 255, 15]
  # The neutral gray pixel falls in one of the four bins around (0, 0).
  assert int(ab_bins.ab_to_class(np.zeros(2), np)) in (119, 120, 135, 136)


def test_decoding_argmax_and_annealed_mean():
  logits = RNG.normal(size=(4, 256)).astype(np.float32)
  centers = ab_bins.class_centers()
  np.testing.assert_allclose(ab_bins.decode(logits, "argmax"), centers[logits.argmax(-1)])
  p = np.exp(logits / 0.38)
  p /= p.sum(-1, keepdims=True)
  np.testing.assert_allclose(ab_bins.decode(logits, "annealed_mean", 0.38), p @ centers, atol=1e-5)


def test_class_weights_follow_the_seed_formulas():
  # Counted over as many pixels as the seed (10k photos at 256 px), w_c ∝ 1/sqrt(n_c + 1e5) ...
  counts = RNG.multinomial(10_000 * 256 ** 2, RNG.dirichlet(np.full(256, 0.2)))
  w = ab_bins.rebalance_weights(counts)
  raw = 1 / np.sqrt(counts + 1e5)
  np.testing.assert_allclose(w / w[0], raw / raw[0], rtol=1e-5)
  assert counts @ w / counts.sum() == pytest.approx(1.0, rel=1e-5)      # mean pixel weight 1
  # ... and counting fewer pixels of the same photos (fewer or smaller crops) gives the same weights.
  np.testing.assert_allclose(ab_bins.rebalance_weights(counts / 160), w, rtol=1e-5)  # 1000 crops of 64 px
  inv = ab_bins.inverse_frequency_weights(counts)
  assert inv[np.argmin(counts)] > inv[np.argmax(counts)]
  assert ab_bins.histogram([np.zeros((3, 4, 2))]).sum() == 12


def test_a_run_from_before_rebalance_offset_keeps_its_weights():
  """Its config.json has no loss.rebalance_offset: +1e5 of the pixels it counted, as it trained."""
  counts = RNG.multinomial(1000 * 64 ** 2, RNG.dirichlet(np.full(256, 0.2)))
  config = config_lib.default_config()
  config.model.num_classes = 256
  del config.loss["rebalance_offset"]
  w = train.class_weights_from_counts(config, counts)
  raw = 1 / np.sqrt(counts + 1e5)
  np.testing.assert_allclose(w / w[0], raw / raw[0], rtol=1e-5)


def test_prior_correction_undoes_the_rebalanced_cross_entropy():
  # Weighted CE's minimiser is softmax(logits) = w p / sum(w p); `prior_shift` (-log w) must
  # give back the photos' own class distribution p, so T = 1 decodes p's mean colour.
  p = 0.3 * RNG.dirichlet(np.full(ab_bins.NUM_CLASSES, 0.3))
  p[ab_bins.NUM_CLASSES // 2 + ab_bins.BINS // 2] += 0.7  # mostly one near-grey class, as photos are
  classes = jnp.asarray(RNG.choice(ab_bins.NUM_CLASSES, size=20000, p=p))
  counts = np.bincount(np.asarray(classes), minlength=ab_bins.NUM_CLASSES)
  w = ab_bins.rebalance_weights(counts, offset_share=5e-4)  # a strong rebalancing
  opt = optax.adam(0.1)

  @jax.jit
  def fit(logits, opt_state):
    grads = jax.grad(lambda z: losses.class_cross_entropy(jnp.broadcast_to(z, (classes.size, z.size)),
                                                          classes, jnp.asarray(w)))(logits)
    updates, opt_state = opt.update(grads, opt_state)
    return optax.apply_updates(logits, updates), opt_state

  logits = jnp.zeros(ab_bins.NUM_CLASSES)
  opt_state = opt.init(logits)
  for _ in range(600):
    logits, opt_state = fit(logits, opt_state)
  c = config_lib.default_config()
  c.model.generator, c.model.num_classes, c.model.temperature = "resnet_colorizer", 256, 1.0
  empirical = counts / counts.sum()
  centers = ab_bins.class_centers()
  c.model.prior_correction = 1.0
  corrected = np.asarray(models.decode_output(models.build_generator(c, w), logits))
  np.testing.assert_allclose(corrected, empirical @ centers, atol=2e-3)
  c.model.prior_correction = 0.0
  biased = np.asarray(models.decode_output(models.build_generator(c, w), logits))
  np.testing.assert_allclose(biased, (empirical * w) @ centers / (empirical @ w), atol=2e-3)
  assert np.abs(biased - corrected).max() > 0.02  # the rebalancing moved the mean (10x the tolerance)


def test_discriminator_loss_is_pix2pixs_halved_bce_of_real_and_fake():
  torch = pytest.importorskip("torch")
  real, fake = RNG.normal(1, 1, size=(2, 6, 6, 1)).astype(np.float32), RNG.normal(-1, 1, size=(2, 6, 6, 1)).astype(np.float32)
  bce = torch.nn.BCEWithLogitsLoss()
  want = 0.5 * (bce(torch.from_numpy(real), torch.ones(2, 6, 6, 1)) + bce(torch.from_numpy(fake), torch.zeros(2, 6, 6, 1)))
  assert float(losses.discriminator_loss(real, fake)) == pytest.approx(float(want), rel=1e-5)
  assert float(losses.bce_with_logits(fake, False)) == pytest.approx(
      float(bce(torch.from_numpy(fake), torch.zeros(2, 6, 6, 1))), rel=1e-5)


def test_colour_weighted_regression_with_tv_is_the_formula():
  """Seed 001's loss: each pixel's error weighed by its true colour's class weight, plus TV."""
  config = config_lib.default_config()
  config.loss.reconstruction, config.loss.tv_weight = "l1", 0.3
  pred, ab = RNG.uniform(-0.6, 0.6, size=(2, 5, 6, 2)), RNG.uniform(-0.6, 0.6, size=(2, 5, 6, 2))
  counts = RNG.integers(0, 1000, size=256).astype(np.float64)
  w = ab_bins.inverse_frequency_weights(counts)
  p = counts / counts.sum()
  raw = 1.0 / (0.5 * p + 0.5 / 256)
  np.testing.assert_allclose(w, raw / (p @ raw), rtol=1e-6)  # Zhang et al.'s mix, mean 1 over the pixels
  classes = ab_bins.ab_to_class(ab, np)
  tv = np.abs(np.diff(pred, axis=1)).mean() + np.abs(np.diff(pred, axis=2)).mean()
  want = np.mean(np.abs(pred - ab) * w[classes][..., None]) + 0.3 * tv
  got = train.reconstruction_loss(config, jnp.asarray(pred), jnp.asarray(ab), jnp.asarray(w))
  assert float(got) == pytest.approx(want, rel=1e-5)
