"""Every shipped config builds, trains at 64 px, and lowers its loss on a fixed batch within STEPS steps."""

import glob
import importlib.util
import os

import numpy as np
import pytest
from PIL import Image

from colorjax import ab_bins, color, train
from colorjax import config as config_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(REPO, "configs", "[!_]*.py")))  # not __init__.py
STEPS = 50  # issue 4: every config lowers its loss over 50 steps on a fixed batch
PHOTOS = sorted(glob.glob(os.path.join(REPO, "colorjax", "assets", "photos", "*.jpg")))


def load_config(path, variant=""):
  spec = importlib.util.spec_from_file_location("cfg", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(variant) if variant else module.get_config()


def fixed_batch(n=4, size=64):
  return np.stack([np.asarray(Image.open(p).convert("RGB").resize((size, size))) for p in PHOTOS[:n]])


def test_every_seed_system_has_a_config():
  names = {os.path.basename(p)[:-3] for p in CONFIGS}
  assert {"demo", "pix2pix_resnet18", "regress_resnet18", "regress_resnet34", "classify_resnet18",
          "encdec_small"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: os.path.basename(p)[:-3])
def test_cpu_variant_or_a_clear_refusal(path):
  name = os.path.basename(path)[:-3]
  if name in ("demo", "quick_cpu", "gpu_10min"):  # each made for one machine
    with pytest.raises(ValueError, match="variant 'cpu': this config takes none"):
      load_config(path, "cpu")
  else:
    full, cpu = load_config(path), load_config(path, "cpu")
    assert (cpu.image_size, cpu.total_steps) == (64, 6000) and cpu.model == full.model
    assert cpu.pretrain_steps / cpu.total_steps == pytest.approx(full.pretrain_steps / full.total_steps, abs=1e-3)
  with pytest.raises(ValueError, match="unknown config variant 'tpu'"):
    load_config(path, "tpu")


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: os.path.basename(p)[:-3])
def test_config_trains_and_its_loss_goes_down_on_a_fixed_batch(path):
  config = load_config(path)
  config.image_size, config.batch_size = 64, 4
  if config.model.generator == "pix2pix_unet":
    config.model.num_downs = -1
  batch = fixed_batch()
  weights = None
  if config.model.num_classes or config.loss.color_weighted:
    counts = ab_bins.histogram([color.rgb_uint8_to_model(batch, np)[1]])
    weights = train.class_weights_from_counts(config, counts)
  trainer = train.Trainer(config, class_weights=weights)
  state = trainer.init_state()
  losses = []
  for step in range(STEPS):
    state, m = trainer.step(state, batch, step)
    losses.append(float(m["g_recon"]))
  assert np.isfinite(losses).all()
  # A 256-way cross-entropy starts at ln 256 and cannot fall below the batch's colour entropy,
  # so it has less room to fall than a regression loss (gpu_10min's U-Net: 0.71x in 50 steps).
  factor = 0.75 if config.model.num_classes else 0.7
  assert np.mean(losses[-5:]) < factor * np.mean(losses[:5]), (losses[:5], losses[-5:])
  if trainer.gan_step is not None:  # the adversarial phase runs too
    config.pretrain_steps = 0
    state, m = trainer.step(state, batch, STEPS)
    assert np.isfinite(float(m["d_loss"])) and np.isfinite(float(m["g_adv"]))
  summary, preds = trainer.evaluate(state, batch)
  assert preds.shape == batch.shape and 0 <= summary["ssim"] <= 1
  assert ("pixel_accuracy" in summary) == bool(config.model.num_classes)


def test_a_gan_config_shortened_below_its_pretraining_is_flagged(caplog):
  config = load_config(os.path.join(REPO, "configs", "pix2pix_resnet18.py"), "cpu")
  config.data.train, config.total_steps = "folder:photos", 6  # a smoke run: L1 only
  with caplog.at_level("WARNING"):
    config_lib.check_run_config(config)
  assert f"pretrain_steps = {config.pretrain_steps} >= total_steps = 6: this run has no GAN phase" in caplog.text


def test_learning_rate_decay_follows_total_steps_and_a_short_one_is_flagged(caplog):
  config = load_config(os.path.join(REPO, "configs", "quick_cpu.py"))
  lr0 = config.optim.g.lr

  def lr_at(step):
    return float(train.learning_rate(config, "g")(step))

  assert train.learning_rate(load_config(os.path.join(REPO, "configs", "demo.py")), "g") == 2e-4  # no decay

  assert lr_at(0) == pytest.approx(lr0, rel=1e-3) and lr_at(config.total_steps) == 0
  total = config.total_steps
  config.total_steps = 2 * total  # "a larger total_steps trains on": not at learning rate 0
  assert lr_at(total) == pytest.approx(lr0 / 2, rel=1e-2)
  config.optim.g.decay_steps = total
  with caplog.at_level("WARNING"):
    config_lib.check_run_config(config)
  assert f"learning rate of g is 0 for its last {total} updates" in caplog.text
  config.optim.g.decay_steps = -2
  with pytest.raises(ValueError, match="config.optim.g.decay_steps must be -1, 0 or a positive integer"):
    config_lib.check_run_config(config)
