"""Models looked up by name from `config.model` (big_vision style)."""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from colorjax import ab_bins, host
from colorjax.models.pix2pix import PatchGAN, UNetGenerator
from colorjax.models.regressors import EncoderDecoder, ResNetColorizer
from colorjax.models.resnet_unet import ResNetUNet

GENERATORS = ("resnet_unet", "pix2pix_unet", "resnet_colorizer", "encdec_small")


def compute_dtype(config: ml_collections.ConfigDict) -> jnp.dtype:
  """`config.dtype`; "auto" is bfloat16 on TPU/GPU and on CPUs with AMX, float32 on other
  CPUs, where bfloat16 convolutions were measured slower than float32 (docs/performance.md)."""
  name = config.get("dtype", "float32")
  if name == "auto":
    fast = jax.default_backend() != "cpu" or host.cpu_has_amx_bf16()
    return jnp.dtype(jnp.bfloat16 if fast else jnp.float32)
  try:
    dtype = jnp.dtype(name)
  except TypeError:
    dtype = None
  if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
    raise ValueError(f"config.dtype {name!r} is not a float type: use \"auto\", \"float32\" or \"bfloat16\"")
  return dtype


def input_multiple(config: ml_collections.ConfigDict) -> int:
  """What the generator's input height and width must be a multiple of (2 ** the times it halves
  them); 1 for a generator name `build_generator` refuses."""
  m = config.model
  if m.generator == "pix2pix_unet":
    return 2 ** _num_downs(config)
  return {"resnet_unet": 32, "encdec_small": 32, "resnet_colorizer": 8}.get(m.generator, 1)


def _num_downs(config: ml_collections.ConfigDict) -> int:
  """pix2pix_unet's halvings: `model.num_downs`, or log2(image_size) for -1 (down to 1 x 1)."""
  return config.model.num_downs if config.model.num_downs > 0 else int(math.log2(config.image_size))


def prior_shift(config: ml_collections.ConfigDict, class_weights: np.ndarray | None) -> tuple[float, ...]:
  """Logit shift -alpha * log(w) that undoes a rebalanced cross-entropy at decode time.

  Training with weights w_c makes softmax(logits) ~ w_c p(c | L) / Z, which over-weights rare,
  saturated colours wherever the model is unsure (the blotches of docs/results.md). Dividing
  w back out (alpha = `model.prior_correction` = 1) recovers p(c | L), whose mean is the
  PSNR-optimal colour; the rebalanced training still taught the rare colours.
  """
  alpha = config.model.get("prior_correction", 0.0)
  if not (alpha and config.model.num_classes and class_weights is not None):
    return ()
  return tuple(float(s) for s in -alpha * np.log(class_weights))


# The model fields each generator is built from (`build_generator`; `encoder_weights` is read
# into its encoder by the trainer). A classifier's also decode; a discriminator has its own.
GENERATOR_FIELDS = {
    "resnet_unet": ("resnet_depth", "encoder_weights", "output_activation", "upsample", "num_classes"),
    "pix2pix_unet": ("num_downs", "ngf", "dropout", "output_activation", "upsample"),
    "resnet_colorizer": ("resnet_depth", "encoder_weights", "output_activation", "num_classes"),
    "encdec_small": ("output_activation", "upsample"),
}
DECODE_FIELDS = ("decode", "temperature", "prior_correction")
DISCRIMINATOR_FIELDS = ("ndf", "d_layers")


def describe(config: ml_collections.ConfigDict) -> str:
  """A run's system in a few words, e.g. `resnet_unet ResNet-18 + patchgan, 256 px`."""
  m = config.model
  words = [m.generator]
  if "resnet_depth" in GENERATOR_FIELDS.get(m.generator, ()):
    words.append(f"ResNet-{m.resnet_depth}")
  if m.num_classes:
    words.append(f"{m.num_classes} classes")
  if m.discriminator != "none":
    words.append(f"+ {m.discriminator}")
  return " ".join(words) + f", {config.image_size} px"


def unused_fields(config: ml_collections.ConfigDict, defaults: ml_collections.ConfigDict) -> dict[str, str]:
  """The `config.model` fields set away from `defaults` that the configured models never read
  (`model.ngf` for resnet_unet), each with why beyond the generator ("without a discriminator"):
  a setting that silently does nothing, which a user should hear of."""
  m = config.model
  read = {"generator", "discriminator", *GENERATOR_FIELDS.get(m.generator, m.keys())}
  if m.num_classes:  # the rebalancing prior_correction divides out is the loss's (`prior_shift`)
    read |= {"decode", "temperature"} | ({"prior_correction"} if config.loss.rebalance else set())
  if m.discriminator != "none":
    read |= set(DISCRIMINATOR_FIELDS)

  def why(field: str) -> str:
    if field in DISCRIMINATOR_FIELDS:
      return " without a discriminator"
    if field in DECODE_FIELDS:
      return " without a rebalanced loss (loss.rebalance)" if m.num_classes else " with model.num_classes 0"
    return ""

  return {k: why(k) for k in m.keys() if k not in read and k in defaults.model and m[k] != defaults.model[k]}


def build_generator(config: ml_collections.ConfigDict, class_weights: np.ndarray | None = None) -> nn.Module:
  """The configured generator; a classifier's `class_weights` (its loss's) set its `prior_shift`."""
  m, dtype = config.model, compute_dtype(config)
  shift = prior_shift(config, class_weights)
  if m.generator == "resnet_unet":
    return ResNetUNet(resnet_depth=m.resnet_depth, output_activation=m.output_activation,
                      upsample=m.upsample, num_classes=m.num_classes, decode=m.decode,
                      temperature=m.temperature, prior_shift=shift, dtype=dtype)
  if m.generator == "pix2pix_unet":
    return UNetGenerator(num_downs=_num_downs(config), ngf=m.ngf, dropout=m.dropout,
                         output_activation=m.output_activation, upsample=m.upsample, dtype=dtype)
  if m.generator == "resnet_colorizer":
    return ResNetColorizer(resnet_depth=m.resnet_depth, num_classes=m.num_classes,
                           output_activation=m.output_activation, decode=m.decode,
                           temperature=m.temperature, prior_shift=shift, dtype=dtype)
  if m.generator == "encdec_small":
    return EncoderDecoder(output_activation=m.output_activation, upsample=m.upsample, dtype=dtype)
  raise ValueError(f"unknown model.generator {m.generator!r}: use one of {GENERATORS}")


def build_discriminator(config: ml_collections.ConfigDict) -> nn.Module:
  m = config.model
  if m.discriminator == "patchgan":
    return PatchGAN(n_layers=m.d_layers, ndf=m.ndf, dtype=compute_dtype(config))
  raise ValueError(f"unknown model.discriminator {m.discriminator!r}: use 'patchgan'")


def decode_output(generator: nn.Module, out: jax.Array) -> jax.Array:
  """A generator's output -> ab: classifiers' logits, shifted by their `prior_shift`, are decoded
  (`ab_bins.decode`)."""
  if getattr(generator, "num_classes", 0):
    if generator.prior_shift:
      out = out + jnp.asarray(generator.prior_shift, jnp.float32)
    return ab_bins.decode(out, generator.decode, generator.temperature)
  return out


def predict_ab(generator: nn.Module, params: Any, stats: Any, l: jax.Array) -> jax.Array:
  """Inference: model-space L [B, H, W, 1] -> ab [B, H, W, 2] with running BN statistics."""
  return decode_output(generator, generator.apply({"params": params, "batch_stats": stats}, l, train=False))
