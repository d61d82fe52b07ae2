"""The fields every config has (other tools read them), with defaults close to seed 000's.

Config files in `configs/` start from `default_config()` and change what their system needs;
every field can be overridden on the command line (`--config.batch_size=32`).
"""

from __future__ import annotations

import logging
import os

import ml_collections

from colorjax import ab_bins, losses, metrics, models


def default_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.image_size = 256            # training crops are image_size x image_size
  c.batch_size = 16             # global, over all devices and processes
  c.grad_accum_steps = 1        # > 1: each update averages that many micro-batches of the batch, in turn
                                # (the memory of one; batch norm normalises each micro-batch on its own)
  c.total_steps = 50_000
  c.pretrain_steps = 25_000     # phase 1: G alone on the reconstruction loss
  c.log_every = 50
  c.eval_every = 1000
  c.eval_max_images = 500       # held-out photos scored at each eval
  c.fid_weights = ""            # pytorch-fid Inception weights: FID tracked at every eval
  c.checkpoint_every = 1000
  c.keep_checkpoints = 3
  # Each eval draws 8 held-out photos as gray | prediction | real (2.4 MB at 256 px) into
  # workdir/samples/step_N.png and into TensorBoard, whose event files cannot be pruned:
  c.keep_samples = 100          # PNGs kept: the newest, and the best checkpoint's (0: all)
  c.tensorboard_samples = 100   # at most this many in TensorBoard, every k-th eval over the run (0: every eval)
  # > 0 keeps an EMA of G's weights, used by eval and colorize. Its decay ramps up as
  # (1 + step) / (10 + step), as TF's ExponentialMovingAverage(num_updates), so 0.99 is reached
  # at step 890 and 0.999 at 8990: shorter runs average over fewer steps than the decay says.
  c.ema_decay = 0.0
  c.best_metric = "psnr"        # held-out metric whose best checkpoint is kept in workdir/best
  c.colorize_checkpoint = "latest"  # what colorize/serve/evaluate load unless told: "latest" or "best"
  c.patience = 0                # evals without a new best before "stopped improving" (0: off)
  c.stop_on_plateau = False     # also stop training then
  c.max_train_minutes = 0.0     # > 0: this run of the command stops (eval, checkpoint) after that long
  c.dtype = "auto"              # compute dtype ("auto": bfloat16 on TPU/GPU and AMX CPUs, else float32); params stay float32

  c.data = ml_collections.ConfigDict()
  c.data.train = ""             # "folder:PATH", "shards:DIR" (colorjax.prepare), "tfds:NAME"; join with ","
  c.data.eval = ""              # "" = the held-out split of data.train
  c.data.eval_fraction = 0.1    # share of data.train held out by a hash of the file path (not with data.eval)
  c.data.num_workers = 0        # grain worker processes (0: threads in this process)
  c.data.stats_images = 1000    # training photos counted for the ab-class histogram
  c.data.max_zoom = 1.0         # crops see the photo at a short side of image_size * U(1, max_zoom)

  c.model = ml_collections.ConfigDict()
  c.model.generator = "resnet_unet"   # or "pix2pix_unet", "resnet_colorizer", "encdec_small"
  c.model.resnet_depth = 18
  c.model.encoder_weights = ""        # torchvision ResNet-18/34 state dict (.pth/.safetensors/.npz)
  c.model.num_downs = -1              # pix2pix_unet: -1 derives log2(image_size)
  c.model.ngf = 64
  c.model.ndf = 64
  c.model.dropout = 0.5               # pix2pix_unet's middle blocks (the other generators have none)
  c.model.output_activation = "tanh"  # or "sigmoid" (seed 000's; the same function, rescaled)
  c.model.upsample = "subpixel"       # transposed convs ("transpose", "col2im", "auto": same maths,
                                      # models/layers.py); resnet_colorizer resizes instead
  c.model.num_classes = 0             # resnet_unet, resnet_colorizer: 256 predicts ab classes (seed 003)
  c.model.decode = "annealed_mean"    # classes -> ab: one of ab_bins.DECODES
  c.model.temperature = 0.38          # annealed-mean temperature
  c.model.prior_correction = 0.0      # 0..1: divide a rebalanced loss's class weights^alpha out before decoding
  c.model.discriminator = "patchgan"  # or "none" for a plain regressor
  c.model.d_layers = 3                # 3: the 70x70 PatchGAN

  c.loss = ml_collections.ConfigDict()
  c.loss.reconstruction = "l1"        # "l1", "mse" or "smooth_l1"
  c.loss.smooth_l1_beta = 1.0         # smooth_l1: quadratic below this error in Lab units (PyTorch's beta on raw ab)
  c.loss.l1_weight = 100.0            # lambda of BCE + lambda * L1 in phase 2
  c.loss.color_weighted = False       # weight pixels by the rarity of their ab class (seed 001)
  c.loss.tv_weight = 0.0              # total-variation regulariser on predicted ab (seed 001)
  c.loss.rebalance = True             # classifiers: w_c = 1 / sqrt(n_c + 1e5) (seed 003)
  # ... with n_c as a share of the pixels counted and 1e5 as a share of the seed's 10k 256 px
  # photos, so data.stats_images and image_size do not change the loss (ab_bins.rebalance_weights)
  c.loss.rebalance_offset = ab_bins.SEED_OFFSET_SHARE

  c.optim = ml_collections.ConfigDict()
  for name in ("g", "d"):
    # decay_steps > 0: cosine decay of lr to 0 over that many updates of this network; -1: over
    # all of its updates in the run (so a larger total_steps stretches the decay); 0: constant lr
    c.optim[name] = ml_collections.ConfigDict({"lr": 2e-4, "b1": 0.5, "b2": 0.999, "decay_steps": 0})
  return c


# The generators with an ab-class head, and those with a ResNet encoder to load model.encoder_weights into.
CLASS_GENERATORS = tuple(g for g, fields in models.GENERATOR_FIELDS.items() if "num_classes" in fields)
ENCODER_GENERATORS = tuple(g for g, fields in models.GENERATOR_FIELDS.items() if "encoder_weights" in fields)
BEST_METRICS = ("psnr", "ssim", "mse", "l1", "colorfulness", "pixel_accuracy", "fid")


def check_run_config(c: ml_collections.ConfigDict) -> None:
  """A ValueError naming the field for run settings that would fail later or lose work.

  Checked before a run writes anything: a zero `keep_checkpoints` would delete every checkpoint,
  a misspelt `best_metric` would crash at the first eval, a zero interval divides by zero.
  """
  defaults = default_config()
  if missing := _missing_fields(c, defaults):
    raise ValueError(f"the config has no {', '.join(missing[:4])}" + (f" and {len(missing) - 4} more fields"
                     if len(missing) > 4 else "") + ": start get_config() from colorjax.config.default_config()")
  if c.model.encoder_weights and c.model.generator not in ENCODER_GENERATORS:
    raise ValueError(f"config.model.encoder_weights is set, but model.generator {c.model.generator!r} has no "
                     f"ResNet encoder to load them into (those that have: {', '.join(ENCODER_GENERATORS)})")
  for name in ("image_size", "batch_size", "total_steps", "log_every", "eval_every",
               "checkpoint_every", "keep_checkpoints", "eval_max_images"):
    if not isinstance(c[name], int) or c[name] < 1:
      raise ValueError(f"config.{name} must be a positive integer, got {c[name]!r}")
  if not isinstance(c.grad_accum_steps, int) or c.grad_accum_steps < 1 or c.batch_size % c.grad_accum_steps:
    raise ValueError(f"config.grad_accum_steps must be a positive integer that divides config.batch_size "
                     f"({c.batch_size}) into micro-batches, got {c.grad_accum_steps!r}")
  if c.image_size < metrics.SSIM_WINDOW:
    raise ValueError(f"config.image_size must be at least {metrics.SSIM_WINDOW} (the held-out SSIM's "
                     f"window), got {c.image_size}")
  if c.image_size % (multiple := models.input_multiple(c)):
    raise ValueError(f"config.image_size {c.image_size} is not a multiple of {multiple}, which model.generator "
                     f"{c.model.generator!r} needs (it halves the image {multiple.bit_length() - 1} times): "
                     f"try {multiple * max(1, round(c.image_size / multiple))}")
  for name, path in (("fid_weights", c.fid_weights), ("model.encoder_weights", c.model.encoder_weights)):
    if path and not os.path.isfile(path):
      raise ValueError(f"config.{name} {path}: no such file")
  if not c.data.train:
    raise ValueError("config.data.train is not set: pass --config.data.train=folder:PATH "
                     "(photos; or shards:DIR, tfds:NAME)")
  for name, value, least in (("seed", c.seed, 0), ("data.num_workers", c.data.num_workers, 0),
                            ("data.stats_images", c.data.stats_images, 1), ("keep_samples", c.keep_samples, 0),
                            ("tensorboard_samples", c.tensorboard_samples, 0)):
    if not isinstance(value, int) or value < least:
      raise ValueError(f"config.{name} must be an integer >= {least}, got {value!r}")
  if c.colorize_checkpoint not in ("latest", "best"):
    raise ValueError(f"config.colorize_checkpoint must be 'latest' or 'best', got {c.colorize_checkpoint!r}")
  if c.pretrain_steps < 0 or c.patience < 0 or c.max_train_minutes < 0:
    raise ValueError("config.pretrain_steps, config.patience and config.max_train_minutes must not be negative")
  if c.stop_on_plateau and not c.patience:
    raise ValueError("config.stop_on_plateau needs config.patience > 0: the evals without a new best that make "
                     "a plateau (0 turns the plateau off)")
  if c.best_metric not in BEST_METRICS:
    raise ValueError(f"config.best_metric {c.best_metric!r} is not one of {', '.join(BEST_METRICS)}")
  if c.best_metric == "pixel_accuracy" and not c.model.num_classes:
    raise ValueError("config.best_metric 'pixel_accuracy' needs an ab-class model (model.num_classes > 0)")
  if c.best_metric == "fid" and not c.fid_weights:
    raise ValueError("config.best_metric 'fid' needs config.fid_weights")
  if not 0 <= c.data.eval_fraction < 1:
    raise ValueError(f"config.data.eval_fraction must be in [0, 1), got {c.data.eval_fraction}")
  if c.data.max_zoom < 1:
    raise ValueError(f"config.data.max_zoom must be >= 1, got {c.data.max_zoom}")
  if c.model.num_classes not in (0, ab_bins.NUM_CLASSES):
    raise ValueError(f"config.model.num_classes = {c.model.num_classes}: the ab classes are "
                     f"{ab_bins.BINS} x {ab_bins.BINS} bins, so 0 (regress ab) or {ab_bins.NUM_CLASSES}")
  if c.model.num_classes and c.loss.rebalance and not c.loss.get("rebalance_offset", 1.0) > 0:
    raise ValueError(f"config.loss.rebalance_offset must be > 0 (a class no pixel has would weigh "
                     f"infinitely), got {c.loss.rebalance_offset}")
  if c.loss.reconstruction not in losses.RECONSTRUCTION:
    raise ValueError(f"config.loss.reconstruction must be one of {', '.join(losses.RECONSTRUCTION)}, "
                     f"got {c.loss.reconstruction!r}")
  if c.loss.reconstruction == "smooth_l1" and not c.loss.smooth_l1_beta > 0:
    raise ValueError(f"config.loss.smooth_l1_beta must be > 0 Lab units, got {c.loss.smooth_l1_beta}")
  if c.model.num_classes and (c.loss.color_weighted or c.loss.tv_weight):
    raise ValueError("config.loss.color_weighted and loss.tv_weight are for models that regress ab; "
                     "an ab-class model's loss is the cross-entropy, weighted by loss.rebalance")
  if c.model.num_classes and c.model.generator not in CLASS_GENERATORS:
    raise ValueError(f"config.model.num_classes = {c.model.num_classes}: model.generator "
                     f"{c.model.generator!r} predicts ab, not classes (use one of {', '.join(CLASS_GENERATORS)})")
  if c.model.num_classes and c.model.discriminator != "none":
    raise ValueError("config.model.num_classes > 0 trains with cross-entropy alone: "
                     "set model.discriminator = 'none'")
  if c.model.num_classes:  # the decode is first read at the first eval: a typo ended a run there, with no checkpoint
    if c.model.decode not in ab_bins.DECODES:
      raise ValueError(f"config.model.decode must be one of {', '.join(ab_bins.DECODES)}, got {c.model.decode!r}")
    if c.model.decode == "annealed_mean" and not c.model.temperature > 0:
      raise ValueError(f"config.model.temperature must be > 0 (1: the mean; lower: bolder), got {c.model.temperature}")
    if not 0 <= c.model.prior_correction <= 1:
      raise ValueError(f"config.model.prior_correction must be in [0, 1], got {c.model.prior_correction}")
  if not 0 <= c.ema_decay < 1:
    raise ValueError(f"config.ema_decay must be in [0, 1), got {c.ema_decay}")
  if c.model.discriminator != "none" and c.pretrain_steps >= c.total_steps:
    logging.warning("config.pretrain_steps = %d >= total_steps = %d: this run has no GAN phase and "
                    "never trains its %s (lower pretrain_steps for one)", c.pretrain_steps, c.total_steps,
                    c.model.discriminator)
  for name in ("g", "d"):
    if c.optim[name].lr < 0:
      raise ValueError(f"config.optim.{name}.lr must not be negative (it would climb the loss), got {c.optim[name].lr}")
    steps = c.optim[name].get("decay_steps", 0)
    if not isinstance(steps, int) or steps < -1:
      raise ValueError(f"config.optim.{name}.decay_steps must be -1, 0 or a positive integer, got {steps!r}")
    if 0 < steps < updates(c, name):
      logging.warning("config.optim.%s.decay_steps = %d: the learning rate of %s is 0 for its last %d "
                      "updates (-1 decays over the whole run)", name, steps, name, updates(c, name) - steps)
  # Last, so a field a check above refuses is not also warned of.
  for name, why in models.unused_fields(c, defaults).items():
    logging.warning("config.model.%s = %r does nothing for model.generator %r%s: it is not read", name,
                    c.model[name], c.model.generator, why)


def _missing_fields(c: ml_collections.ConfigDict, defaults: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
  """The fields of `defaults` that `c` lacks, dotted (`model.generator`)."""
  missing = []
  for key, value in defaults.items():
    if key not in c:
      missing.append(prefix + key)
    elif isinstance(value, ml_collections.ConfigDict) and isinstance(c[key], ml_collections.ConfigDict):
      missing += _missing_fields(c[key], value, f"{prefix}{key}.")
  return missing


def updates(c: ml_collections.ConfigDict, name: str) -> int:
  """How many optimiser updates network `name` gets in the run: G every step, D after pretraining."""
  return c.total_steps if name == "g" else max(c.total_steps - c.pretrain_steps, 0)


def decay_steps(c: ml_collections.ConfigDict, name: str) -> int:
  """`optim.NAME.decay_steps` with -1 resolved to the network's updates in the run (0: no decay)."""
  steps = c.optim[name].get("decay_steps", 0)
  return max(updates(c, name), 1) if steps == -1 else steps


def held_out_share(config: ml_collections.ConfigDict) -> float:
  """The share of `data.train`'s folder and TFDS sources held out by path hash: `data.eval_fraction`,
  or none when `data.eval` is the held-out set. Shards keep the split `prepare` made."""
  return 0.0 if config.data.eval else config.data.eval_fraction


def apply_variant(c: ml_collections.ConfigDict, variant: str,
                  variants: tuple[str, ...] = ("cpu",)) -> ml_collections.ConfigDict:
  """`--config configs/X.py:cpu` gives the same system sized for a 2-core CPU (64 px).

  Step counts shrink with the image area so a CPU run finishes in tens of minutes; the
  pretraining share of the schedule is kept. Configs made for one machine pass `variants=()`.
  """
  if variant and variant not in variants:
    raise ValueError(f"unknown config variant {variant!r}: this config takes "
                     + (" or ".join(map(repr, variants)) if variants else "none (it is sized for its machine)"))
  if variant == "cpu":
    share = c.pretrain_steps / c.total_steps
    c.image_size = 64
    c.total_steps = 6000
    c.pretrain_steps = int(c.total_steps * share)
    c.eval_every = c.checkpoint_every = 500
    c.eval_max_images = 200
  return c


def shared_photos(config_file: str) -> str:
  """`../shared/data`'s ADE20K + ImageNet sample beside the checkout of `config_file` (issue 8's
  photos). "" (unset) for a config installed inside colorjax (a wheel's `colorjax/configs/`):
  there the same path would be `site-packages/shared/data`, which no one makes, and train's error
  was that folder's; unset, it asks for `--config.data.train` instead."""
  folder = os.path.dirname(os.path.abspath(config_file))
  if os.path.normcase(folder) == os.path.normcase(os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")):
    return ""
  data = os.path.join(folder, os.pardir, os.pardir, "shared", "data")
  return ",".join("folder:" + os.path.normpath(os.path.join(data, d)) for d in ("ade20k", "imagenet_sample"))


def ab_class_recipe(c: ml_collections.ConfigDict, steps: int) -> ml_collections.ConfigDict:
  """Issue 8's colour recipe for `c.model.generator`, trained for `steps` updates.

  256 ab classes trained with the class-rebalanced cross-entropy and decoded by the mean of the
  model's distribution with the rebalancing divided back out (`model.prior_correction` 1, T 1),
  no discriminator, an EMA of the weights and Adam 1e-3 with a cosine decay to 0 (docs/results.md,
  "Choosing quick_cpu", says why).
  """
  c.total_steps = c.pretrain_steps = steps
  c.ema_decay = 0.999
  c.model.num_classes = 256
  c.model.decode = "annealed_mean"
  c.model.temperature = 1.0
  c.model.prior_correction = 1.0
  c.model.discriminator = "none"
  c.loss.rebalance = True
  # The flatter weights the recipe was chosen and measured with: seed 003's +1e5 pixels over the
  # 1000 crops at the config's size it counted (docs/results.md; Zhang et al.'s stronger
  # rebalancing did worse there).
  c.loss.rebalance_offset = 1e5 / (c.data.stats_images * c.image_size ** 2)
  c.optim.g.update(lr=1e-3, b1=0.9, b2=0.999, decay_steps=-1)
  return c
