"""Colorizes photos with a trained model.

    python -m colorjax.colorize --workdir runs/demo photo.jpg old_photos/ --out colorized/

The model predicts ab at the render size (short side `--render-size`, default the training
`image_size`, rounded to the network's stride); ab is upsampled to the photo's full
resolution and recombined with the photo's own full-resolution L, so no detail is lost.
Python API: `Colorizer.from_workdir("runs/demo")(rgb_or_gray_uint8) -> uint8 RGB`.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from pathlib import Path
from typing import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import app, flags
from PIL import Image

from colorjax import color, models, train
from colorjax.data.images import IMAGE_EXTENSIONS, BadImageError, open_image


def _stride(config: ml_collections.ConfigDict) -> int:
  if config.model.generator == "pix2pix_unet":
    return 2 ** (models.build_generator(config).num_downs)
  return 32


class Colorizer:
  """A trained generator (EMA-free for now: the checkpoint's weights) ready for inference."""

  def __init__(self, config: ml_collections.ConfigDict, params, batch_stats,
               render_size: int | None = None):
    self.config = config
    self.generator = models.build_generator(config)
    self.variables = {"params": params, "batch_stats": batch_stats}
    self.render_size = render_size or config.image_size
    self.stride = _stride(config)
    self._predict = jax.jit(functools.partial(train.predict_ab, self.generator))

  @classmethod
  def from_workdir(cls, workdir: str, checkpoint: str = "latest",
                   render_size: int | None = None) -> "Colorizer":
    """Loads `workdir/config.json` and checkpoint `latest` or a step number."""
    config_path = os.path.join(workdir, "config.json")
    if not os.path.exists(config_path):
      raise FileNotFoundError(f"{workdir!r} is not a colorjax workdir (no config.json): train first")
    with open(config_path) as f:
      config = ml_collections.ConfigDict(json.load(f))
    mgr = ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), "checkpoints"))
    steps = mgr.all_steps()
    if not steps:
      raise FileNotFoundError(f"{workdir!r} has no checkpoint yet")
    step = max(steps) if checkpoint == "latest" else int(checkpoint)
    if step not in steps:
      raise FileNotFoundError(f"{workdir!r} has no checkpoint {step} (has {sorted(steps)})")
    generator = models.build_generator(config)
    discriminator = models.build_discriminator(config) if config.model.discriminator != "none" else None
    abstract = jax.eval_shape(functools.partial(
        train.create_train_state, config, generator=generator, discriminator=discriminator),
        jax.random.key(0))
    state = train.restore_state(mgr, abstract, step)
    logging.info("loaded %s step %d", workdir, step)
    return cls(config, state.g_params, state.g_stats, render_size)

  def render_shape(self, height: int, width: int) -> tuple[int, int]:
    """The network's input size: short side ~render_size, aspect kept, multiples of the stride."""
    scale = self.render_size / min(height, width)
    snap = lambda x: max(self.stride, int(round(x * scale / self.stride)) * self.stride)
    return snap(height), snap(width)

  def predict_ab(self, l_norm: np.ndarray) -> np.ndarray:
    """Model-space L [H, W] (full resolution) -> ab [H, W, 2] in [-1, 1]."""
    h, w = l_norm.shape
    rh, rw = self.render_shape(h, w)
    small = np.asarray(Image.fromarray(l_norm.astype(np.float32), mode="F").resize((rw, rh), Image.BICUBIC))
    ab = np.asarray(self._predict(self.variables["params"], self.variables["batch_stats"],
                                  jnp.asarray(small)[None, :, :, None]))[0]
    return np.stack([np.asarray(Image.fromarray(ab[..., c], mode="F").resize((w, h), Image.BILINEAR))
                     for c in range(2)], axis=-1)

  def __call__(self, image: np.ndarray) -> np.ndarray:
    """uint8 RGB [H, W, 3] or gray [H, W] -> colorized uint8 RGB [H, W, 3] (same size).

    A colour input is first reduced to its L channel.
    """
    rgb = np.repeat(image[..., None], 3, axis=-1) if image.ndim == 2 else image
    lab = color.rgb_to_lab(rgb.astype(np.float32) / 255.0, np)
    l_norm = lab[..., 0] / 50.0 - 1.0
    ab = self.predict_ab(l_norm)
    return color.to_uint8(color.model_to_rgb(l_norm[..., None], ab, np), np)


def collect_inputs(inputs: Sequence[str]) -> list[tuple[str, str]]:
  """(input file, output path relative to --out); folders are walked and their tree kept."""
  pairs = []
  for item in inputs:
    path = Path(item)
    if path.is_dir():
      for f in sorted(path.rglob("*")):
        if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS:
          pairs.append((str(f), str(f.relative_to(path).with_suffix(".png"))))
    else:
      pairs.append((item, path.with_suffix(".png").name))
  return pairs


def colorize_files(colorizer: Colorizer, inputs: Sequence[str], out_dir: str) -> int:
  """Writes one PNG per input; returns the number of failures (each logged in one line)."""
  pairs = collect_inputs(inputs)
  sources = {os.path.abspath(src) for src, _ in pairs}
  failures = 0
  for i, (src, rel) in enumerate(pairs, 1):
    dst = os.path.join(out_dir, rel)
    try:
      if os.path.abspath(dst) in sources:
        raise BadImageError(f"{src}: output {dst} would overwrite an input; choose another --out")
      rgb, alpha = open_image(src)
      out = colorizer(rgb)
      os.makedirs(os.path.dirname(dst) or ".", exist_ok=True)
      img = Image.fromarray(out)
      if alpha is not None:
        img.putalpha(Image.fromarray(alpha))
      img.save(dst)
      print(f"[{i}/{len(pairs)}] {src} -> {dst}", flush=True)
    except BadImageError as e:
      print(f"error: {e}", file=sys.stderr, flush=True)
      failures += 1
  return failures


def main(argv: list[str]) -> None:
  inputs = argv[1:]
  if not inputs:
    raise app.UsageError("give at least one image file or folder to colorize")
  colorizer = Colorizer.from_workdir(FLAGS.workdir, FLAGS.checkpoint, FLAGS.render_size or None)
  failures = colorize_files(colorizer, inputs, FLAGS.out)
  if failures:
    print(f"{failures} of {len(collect_inputs(inputs))} inputs failed", file=sys.stderr)
  sys.exit(1 if failures else 0)


FLAGS = flags.FLAGS

if __name__ == "__main__":
  flags.DEFINE_string("workdir", None, "Training workdir with config.json and checkpoints/")
  flags.DEFINE_string("out", "colorized", "Output folder (one PNG per input, same stem)")
  flags.DEFINE_string("checkpoint", "latest", "'latest' or a step number")
  flags.DEFINE_integer("render_size", 0, "Short side the model sees (default: the training image_size)")
  flags.mark_flags_as_required(["workdir"])
  app.run(main)
