"""Colorizes photos with a trained model.

    python -m colorjax.colorize --workdir runs/demo photo.jpg old_photos/ 'scans/**/*.tif' --out colorized/

The model predicts ab at the render size (short side `--render-size`, default the training
`image_size`, rounded to the network's stride: larger sees more detail, smaller gives surer
colour, as DeOldify's render_factor); ab is upsampled to the photo's full resolution and
recombined with the photo's own full-resolution L, so no detail is lost. Above the training
size the coarse colour still comes from a render at the training size (`anchor_colour`): a
model sees textures at the scale it was trained on only there, and its colour drifts with the
render size otherwise (docs/results.md). The full-resolution
work runs in bands of rows, so a 50-MP photo needs about 1.4 GB with the demo model (0.8 GB
of it JAX and the model), not tens of GB.
Python API: `colorjax.Colorizer.from_workdir("runs/demo")(rgb_or_gray_array) -> uint8 RGB`
(RGBA when the input has alpha).
"""

from __future__ import annotations

import collections
import functools
import glob
import io
import json
import logging
import os
import re
import struct
import sys
import warnings
from pathlib import Path
from typing import Any, BinaryIO, Iterator, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags
from PIL import Image
from tqdm import tqdm

from colorjax import checkpoints, cli, color, models, train
from colorjax.data import shards
from colorjax.data.images import (IMAGE_EXTENSIONS, MAX_PIXELS, BadImageError, list_tree, open_image, to_rgb,
                                  why_unidentified, with_alpha)

FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF")  # camera MPO files open as JPEG
DEFAULT_MAX_PIXELS = MAX_PIXELS  # decompression-bomb guard, --max-pixels
_BAND_PIXELS = 1 << 18            # 0.26 MP per band keeps the float temporaries near 25 MB
_BATCH_PIXELS = 64_000_000        # full-resolution pixels held in memory for one device batch
_ORIENTATION = 0x0112             # EXIF tag; values 5-8 swap width and height


def _stride(config: ml_collections.ConfigDict) -> int:
  """Render shapes snap to this: pix2pix_unet's own multiple, 32 for the others (which any of
  them divides)."""
  return models.input_multiple(config) if config.model.generator == "pix2pix_unet" else 32


def abstract_state(config: ml_collections.ConfigDict) -> train.TrainState:
  """The shapes and dtypes of a run's TrainState, computed without allocating it."""
  generator = models.build_generator(config)
  discriminator = models.build_discriminator(config) if config.model.discriminator != "none" else None
  return jax.eval_shape(functools.partial(
      train.create_train_state, config, generator=generator, discriminator=discriminator), jax.random.key(0))


def _restore(directory: str, abstract: train.TrainState, checkpoint: str) -> tuple[tuple[Any, Any], int]:
  """G's inference weights and statistics (`train.inference_fields`) of a `checkpoints/` step
  or of the single `best/` one, as `read_run` found them, onto this process's first device.

  Without a sharding in `abstract` orbax restores onto the devices the run saved from, and
  refuses on any other topology: a model trained on a pod or a GPU box would not load on a laptop.
  """
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), abstract)
  item = "default" if checkpoint == "best" else "state"
  for last_try in (False, True):
    mgr = checkpoints.open_checkpoints(directory)
    step = mgr.latest_step() if checkpoint in ("best", "latest") else int(checkpoint)
    try:
      fields = train.inference_fields(abstract)
      if misfit := checkpoints.misfits(mgr, abstract, step, item, fields):
        raise ValueError(f"checkpoint {step} in {directory} does not fit the run's config.json ({misfit})")
      restored = checkpoints.restore_fields(mgr, abstract, step, fields, item)
      return tuple(restored[f] for f in fields), step
    except (checkpoints.UnreadableCheckpoint, FileNotFoundError):
      # A run still training replaces `latest` and `best` while they are read: read the new one.
      replaced = checkpoint in ("best", "latest") and step not in checkpoints.open_checkpoints(directory).all_steps()
      if last_try or not replaced:
        raise


CHECKPOINT_HELP = "'latest', 'best' or a step number (default: the run's config.colorize_checkpoint)"
COLOUR_AT_RENDER_SIZE_HELP = ("above the training size, take the coarse colour from the render "
                               "too (default: from the training size, so it does not drift with --render-size)")
PRIOR_CORRECTION_HELP = ("ab-class models trained with rebalanced classes: 0 keeps the loss's bias to "
                         "rare colours, 1 divides it out (default -1: the run's model.prior_correction)")


def prior_correction_flag() -> float | None:
  """`--prior_correction` of colorize/evaluate: None (the run's value) when negative."""
  return None if flags.FLAGS.prior_correction < 0 else flags.FLAGS.prior_correction


def read_run(workdir: str, checkpoint: str | int = "") -> tuple[ml_collections.ConfigDict, str, str]:
  """(a run's config, its checkpoint `checkpoint` as "latest", "best" or a step, that
  checkpoint's directory), once `workdir` is known to hold it.

  "" is the run's `config.colorize_checkpoint`, or "latest" while a run has no best one yet (it
  is written at the first eval). Loads no model, so a command given several workdirs finds a
  typo in the last one before it spends minutes on the others.
  """
  config_path = os.path.join(workdir, "config.json")
  if not os.path.exists(workdir):
    raise FileNotFoundError(f"workdir {workdir!r} does not exist")
  if not os.path.exists(config_path):
    # An empty checkpoints/ is a run stopped before its first save, not checkpoints.
    if any(os.path.isdir(path) and os.listdir(path) for path in (os.path.join(workdir, "checkpoints"),
                                                                 os.path.join(workdir, "best"))):
      raise FileNotFoundError(f"{workdir!r} has checkpoints but no config.json, which says what model "
                              "they hold: copy it from the run's workdir")
    raise FileNotFoundError(f"{workdir!r} is not a colorjax workdir (no config.json): train first")
  with open(config_path) as f:
    try:
      config = ml_collections.ConfigDict(json.load(f))
    except json.JSONDecodeError as e:
      raise ValueError(f"{config_path} is not valid JSON ({e})") from e
  listed: dict[str, list[int]] = {}

  def steps_in(directory: str) -> list[int]:
    if directory not in listed:
      listed[directory] = checkpoints.open_checkpoints(directory).all_steps() if os.path.isdir(directory) else []
    return listed[directory]

  best = os.path.join(os.path.abspath(workdir), "best")
  checkpoint = str(checkpoint) if isinstance(checkpoint, int) and checkpoint >= 0 else checkpoint
  if not checkpoint:
    checkpoint = config.get("colorize_checkpoint", "latest")
    if checkpoint == "best" and not steps_in(best):  # training makes best/ empty when it starts
      logging.warning("%s has no best checkpoint yet (it is written at the first eval): using the latest", workdir)
      checkpoint = "latest"
  if not isinstance(checkpoint, str) or checkpoint not in ("latest", "best") and not checkpoint.isdigit():
    raise ValueError(f"checkpoint must be 'latest', 'best' or a step number, got {checkpoint!r}")
  directory = best if checkpoint == "best" else os.path.join(os.path.abspath(workdir), "checkpoints")
  steps = steps_in(directory)
  if not steps:
    what = ("best checkpoint (best/ is written at evals; --checkpoint latest takes the newest)"
            if checkpoint == "best" else "checkpoint yet")
    if os.path.exists(os.path.join(workdir, checkpoints.EXPORTED_FILE)):
      what = "checkpoint but its best: it is an exported model (give --checkpoint best, or none)"
    raise FileNotFoundError(f"{workdir!r} has no {what}")
  if checkpoint.isdigit() and int(checkpoint) not in steps:
    raise FileNotFoundError(f"no checkpoint {checkpoint} in {directory} (has {sorted(steps)})")
  return config, checkpoint, directory


class Colorizer:
  """A trained generator ready for inference on photos of any size."""

  def __init__(self, config: ml_collections.ConfigDict, params: Any, batch_stats: Any,
               render_size: int | None = None, batch_size: int = 8, *,
               colour_at_render_size: bool = False,
               checkpoint: str = "", step: int | None = None, class_weights: np.ndarray | None = None,
               fields: tuple[str, str] | None = None):
    """`checkpoint` ("latest", "best" or a step), `step` and `fields` (the TrainState fields of
    the weights and statistics, `train.inference_fields`) say where the weights came from;
    `class_weights` are the run's loss weights (for `model.prior_correction`).
    `colour_at_render_size` takes the coarse colour from the render size too (see
    `anchor_colour`; by default it comes from the training size)."""
    self.config = config
    self.checkpoint, self.step, self.fields = checkpoint, step, fields
    self.generator = models.build_generator(config, class_weights)
    self.variables = {"params": params, "batch_stats": batch_stats}
    if render_size is not None and render_size < 0:
      raise ValueError(f"render size must be positive (0 or None: the training size), got {render_size}")
    if batch_size < 1:
      raise ValueError(f"batch size must be at least 1, got {batch_size}")
    self.render_size = render_size or config.image_size
    self.batch_size = batch_size
    self.anchored = not colour_at_render_size and self.render_size > config.image_size
    self.stride = _stride(config)
    self._predict = jax.jit(functools.partial(models.predict_ab, self.generator))

  @classmethod
  def from_workdir(cls, workdir: str, checkpoint: str | int = "",
                   render_size: int | None = None, batch_size: int = 8,
                   temperature: float | None = None,
                   prior_correction: float | None = None,
                   colour_at_render_size: bool = False) -> "Colorizer":
    """Loads `workdir/config.json` and checkpoint `latest`, `best` or a step number.

    "" takes the run's `config.colorize_checkpoint`: a run can name its held-out best as its
    product (the demo does: 26 photos over-fit within a few hundred steps).

    `temperature` overrides a classifier's annealed-mean temperature: lower gives bolder
    colour, higher (up to 1, the mean) safer colour. `prior_correction` overrides
    `model.prior_correction` (0 keeps the rebalanced loss's bias to rare colours, 1 removes it).
    """
    config, checkpoint, directory = read_run(workdir, checkpoint)
    if (temperature is not None and temperature <= 0) or (prior_correction is not None and not 0 <= prior_correction <= 1):
      raise ValueError(f"temperature must be > 0 (1: the mean; lower: bolder) and prior_correction in [0, 1]; "
                       f"got {temperature} and {prior_correction}")
    if temperature:
      if not config.model.num_classes:
        raise ValueError(f"temperature applies to ab-class models; {workdir!r} regresses ab")
      config.model.decode, config.model.temperature = "annealed_mean", temperature
    if prior_correction is not None:
      if not config.model.num_classes:
        raise ValueError(f"prior_correction applies to ab-class models; {workdir!r} regresses ab")
      config.model.prior_correction = prior_correction
    abstract = abstract_state(config)
    (params, batch_stats), step = _restore(directory, abstract, checkpoint)
    logging.info("loaded %s %s (step %d)", workdir, checkpoint, step)
    corrected = config.model.num_classes and config.model.get("prior_correction", 0.0)
    return cls(config, params, batch_stats, render_size, batch_size,
               colour_at_render_size=colour_at_render_size, checkpoint=checkpoint, step=step,
               fields=train.inference_fields(abstract),
               class_weights=train.read_class_weights(config, workdir) if corrected else None)

  def render_shape(self, height: int, width: int, size: int | None = None) -> tuple[int, int]:
    """The network's input size: short side ~`size` (default the render size), aspect kept,
    multiples of the stride.

    The long side is capped at 4x that size so a panorama strip cannot exhaust memory.
    """
    size = size or self.render_size
    scale = min(size / min(height, width), 4 * size / max(height, width))
    snap = lambda x: max(self.stride, int(round(x * scale / self.stride)) * self.stride)
    return snap(height), snap(width)

  def lightness(self, image: np.ndarray) -> np.ndarray:
    """uint8/uint16/bool/float [0, 1] gray or RGB, [H, W] or [H, W, C] -> model-space L [H, W] float32."""
    image = np.asarray(image)
    if image.ndim not in (2, 3) or 0 in image.shape or (image.ndim == 3 and image.shape[2] > 4):
      raise ValueError(f"an image is an array [H, W] or [H, W, 1-4] with H, W >= 1; got shape {image.shape}")
    if image.dtype == bool:  # a 1-bit image
      image = image.astype(np.uint8) * 255
    if image.dtype not in _SCALE and image.dtype.kind != "f":
      raise ValueError(f"image dtype {image.dtype} is not uint8, uint16, bool or float in [0, 1]")
    if image.dtype.kind == "f":  # out of range it would come back white, NaN black
      lo, hi = image.min(), image.max()  # NaN and infinities show in these too
      if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError("the float image has NaN or infinite values")
      if lo < -1e-3 or hi > 1 + 1e-3:  # rounding past the ends is fine
        raise ValueError(f"a float image is in [0, 1]; this one spans [{lo:g}, {hi:g}] "
                         "(for 0..255 values pass uint8, or divide by 255)")
    scale = _SCALE.get(image.dtype, 1.0)
    h, w = image.shape[:2]
    out = np.empty((h, w), np.float32)
    for y0, y1 in _bands(h, w):
      band = np.clip(image[y0:y1].astype(np.float32) / scale, 0, 1)
      gray = band.ndim == 2 or band.shape[-1] < 3
      rgb = np.repeat(band.reshape(band.shape[:2] + (-1,))[..., :1], 3, axis=-1) if gray else band[..., :3]
      out[y0:y1] = color.rgb_to_lab(rgb, np)[..., 0] / 50.0 - 1.0
    return out

  def predict(self, l_small: np.ndarray) -> np.ndarray:
    """Model-space L [B, h, w] (one render shape) -> ab [B, h, w, 2] in [-1, 1].

    Several photos are padded to `batch_size`, so each render shape compiles twice at most
    (one photo, a batch): a compile costs seconds, a padded row milliseconds at the usual sizes.
    """
    n = len(l_small)
    padded = np.zeros((1 if n == 1 else max(n, self.batch_size),) + l_small.shape[1:], np.float32)
    padded[:n] = l_small
    ab = self._predict(self.variables["params"], self.variables["batch_stats"], jnp.asarray(padded)[..., None])
    return np.asarray(ab)[:n]

  def colorize_batch(self, images: Sequence[np.ndarray | Image.Image]) -> list[np.ndarray]:
    """Several photos, one device call per render shape (and per training-size shape when
    anchored); each comes back as `__call__` gives it."""
    images = [_as_array(image) for image in images]
    lights = [self.lightness(image) for image in images]
    predicted = self._predict_each(lights, self.render_size)
    if self.anchored:  # photos whose two renders snap to the same shape need no second one
      wider = [i for i, l in enumerate(lights)
               if self.render_shape(*l.shape) != self.render_shape(*l.shape, self.config.image_size)]
      for i, coarse in zip(wider, self._predict_each([lights[i] for i in wider], self.config.image_size)):
        predicted[i] = anchor_colour(predicted[i], coarse)
    return [with_alpha(recombine(light, ab), _alpha(image)) for image, light, ab in zip(images, lights, predicted)]

  def _predict_each(self, lights: Sequence[np.ndarray], size: int) -> list[np.ndarray]:
    """Full-resolution L planes -> each one's ab at its render shape for short side `size`."""
    smalls = [_resize(l, self.render_shape(*l.shape, size)) for l in lights]
    out: list = [None] * len(smalls)
    for shape in {s.shape for s in smalls}:
      idx = [i for i, s in enumerate(smalls) if s.shape == shape]
      for start in range(0, len(idx), self.batch_size):
        chunk = idx[start:start + self.batch_size]
        for i, ab in zip(chunk, self.predict(np.stack([smalls[i] for i in chunk]))):
          out[i] = ab
    return out

  def __call__(self, image: np.ndarray | Image.Image) -> np.ndarray:
    """uint8 RGB [H, W, 3] or gray [H, W] -> colorized uint8 RGB [H, W, 3] (same size).

    A colour input is first reduced to its L channel. uint16 and float [0, 1] inputs work too;
    an input with alpha (gray+alpha, RGBA) keeps it as the output's fourth channel (uint8). A
    PIL image of any mode (palette, CMYK, 16-bit...) is converted as `colorize` reads files,
    without the EXIF rotation a file gets. Several photos: `colorize_batch`.
    """
    if isinstance(image, (list, tuple)) or getattr(image, "ndim", 0) == 4:
      raise ValueError("a Colorizer call takes one image; for several, call colorize_batch (a list or [B, H, W, C])")
    return self.colorize_batch([image])[0]


_SCALE = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}


def _as_array(image: np.ndarray | Image.Image) -> np.ndarray:
  """A PIL image as the array its mode means (a palette's colours, CMYK as RGB, alpha kept)."""
  if not isinstance(image, Image.Image):
    return image
  rgb, alpha = to_rgb(image, composite=False)
  return with_alpha(np.asarray(rgb), alpha)


def _alpha(image: np.ndarray) -> np.ndarray | None:
  """The alpha channel of a gray+alpha or RGBA array as uint8 [H, W], else None."""
  if image.ndim != 3 or image.shape[-1] not in (2, 4):
    return None
  return color.to_uint8(image[..., -1].astype(np.float32) / _SCALE.get(image.dtype, 1.0), np)


def _bands(h: int, w: int) -> Iterator[tuple[int, int]]:
  rows = max(1, _BAND_PIXELS // w)
  for y0 in range(0, h, rows):
    yield y0, min(h, y0 + rows)


def _resize(x: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
  """float32 [H, W] -> [h, w], bicubic (antialiased when shrinking)."""
  return np.asarray(Image.fromarray(x).resize(shape[::-1], Image.BICUBIC))


def _resize_ab(ab: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
  return np.stack([_resize(np.ascontiguousarray(ab[..., c], np.float32), shape) for c in range(2)], -1)


def anchor_colour(ab: np.ndarray, coarse: np.ndarray) -> np.ndarray:
  """ab [h, w, 2] at the render size with its coarse band replaced by `coarse`'s [h', w', 2].

  One step of a Laplacian pyramid: ab - up(down(ab)) + up(coarse), with `coarse` predicted at
  the training size. The render keeps the detail only it sees (sharper colour edges); the
  colour of regions comes from the scale the model was trained at, so it stays the same at
  any render size. Where the two renders agree on the coarse band, `ab` is returned as it is.
  """
  down = _resize_ab(ab, coarse.shape[:2])
  return np.clip(ab + _resize_ab(coarse - down, ab.shape[:2]), -1.0, 1.0)


def recombine(l_norm: np.ndarray, ab: np.ndarray) -> np.ndarray:
  """Full-resolution L [H, W] + render-size ab [h, w, 2] -> uint8 RGB [H, W, 3], band by band.

  Each band resamples its own window of ab (PIL's `box`), which gives the same pixels as
  upsampling the whole ab plane at once without ever holding it.
  """
  h, w = l_norm.shape
  rh, rw = ab.shape[:2]
  planes = [Image.fromarray(np.ascontiguousarray(ab[..., c], np.float32)) for c in range(2)]
  out = np.empty((h, w, 3), np.uint8)
  for y0, y1 in _bands(h, w):
    box = (0, y0 * rh / h, rw, y1 * rh / h)
    ab_band = np.stack([np.asarray(p.resize((w, y1 - y0), Image.BILINEAR, box=box)) for p in planes], -1)
    out[y0:y1] = color.to_uint8(color.model_to_rgb(l_norm[y0:y1, :, None], ab_band, np), np)
  return out


class TooManyPixelsError(BadImageError):
  """An image over the pixel limit; `pixels` is its size (None when PIL refused to say)."""

  def __init__(self, message: str, pixels: int | None = None):
    super().__init__(message)
    self.pixels = pixels


def probe(source: str | os.PathLike | BinaryIO, max_pixels: int = DEFAULT_MAX_PIXELS,
          name: str | None = None) -> tuple[int, int]:
  """(height, width) as displayed (EXIF orientation applied), read from the header alone.

  Raises `BadImageError` for files that are not JPEG/PNG/WebP/BMP/TIFF photos, and its
  subclass `TooManyPixelsError` for images over `max_pixels`, before anything is decoded.
  """
  name = name or str(source)
  if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < max_pixels:
    Image.MAX_IMAGE_PIXELS = max_pixels  # PIL's own guard must not fire below ours
  over = f"over the limit of {max_pixels:,} pixels (a guard against decompression bombs)"
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", Image.DecompressionBombWarning)
      with Image.open(source, formats=FORMATS) as img:
        w, h = img.size
        if img.getexif().get(_ORIENTATION, 1) in (5, 6, 7, 8):
          w, h = h, w
  except Image.DecompressionBombError:
    raise TooManyPixelsError(f"{name}: too many pixels, far {over}") from None
  except FileNotFoundError:
    pattern = " (the pattern matches nothing)" if glob.has_magic(name) else ""
    raise BadImageError(f"{name}: no such file{pattern}") from None
  except Image.UnidentifiedImageError:
    raise BadImageError(f"{name}: {why_unidentified(source)}") from None
  except (OSError, ValueError, SyntaxError) as e:
    raise BadImageError(f"{name}: unreadable image ({e})") from None
  if w * h > max_pixels:
    raise TooManyPixelsError(f"{name}: too many pixels, {w}x{h} = {w * h:,} is {over}", w * h)
  return h, w


def read_image(source: str | os.PathLike | bytes, max_pixels: int = DEFAULT_MAX_PIXELS,
               name: str | None = None) -> tuple[np.ndarray, np.ndarray | None]:
  """`probe`, then decode: (uint8 RGB [H, W, 3], alpha [H, W] or None)."""
  probe(io.BytesIO(source) if isinstance(source, bytes) else source, max_pixels, name)
  return open_image(source, name=name, composite=False)


# What a colorized PNG keeps of a photo's first EXIF directory: what describes the photo. Not
# what describes the file (a TIFF's strips, bits per sample, compression) nor the orientation.
_DESCRIPTIVE_TAGS = (0x010E, 0x010F, 0x0110, 0x0131, 0x0132, 0x013B, 0x8298,  # description, make, model,
                     0x9C9B, 0x9C9C, 0x9C9D, 0x9C9E, 0x9C9F)  # software, date, artist, copyright; Windows' XP*
_EXIF_IFD, _GPS_IFD = 0x8769, 0x8825                           # dates taken, exposure; location
_FILE_LAYOUT_EXIF_TAGS = (0xA002, 0xA003, 0xA005)              # pixel width, height; interoperability IFD


def photo_metadata(path: str | os.PathLike | BinaryIO, name: str | None = None) -> dict[str, Any]:
  """What a colorized PNG keeps of its photo, as `Image.save` arguments: the EXIF that describes
  the photo (date taken, camera, description, location), and its resolution, so a 600-dpi scan
  prints at its size. Not the orientation, which the pixels have by then, nor a TIFF's layout
  tags, nor the ICC profile: the output is sRGB, whatever the scan was. {} where the header
  cannot be read again or its EXIF cannot be carried over: the picture matters, not its tags.
  `name`: what the info line then calls the photo (an upload's file name; default `path`)."""
  try:
    with Image.open(path, formats=FORMATS) as img:
      exif = img.getexif()
      dpi = _declared_dpi(img, exif)
      exif_ifd, gps_ifd = (exif.get_ifd(ifd) if ifd in exif else {} for ifd in (_EXIF_IFD, _GPS_IFD))
    kept = Image.Exif()
    kept.update({tag: exif[tag] for tag in _DESCRIPTIVE_TAGS if tag in exif})
    subs = {_EXIF_IFD: {k: v for k, v in exif_ifd.items() if k not in _FILE_LAYOUT_EXIF_TAGS}, _GPS_IFD: gps_ifd}
    for ifd, tags in subs.items():
      if tags:
        kept.get_ifd(ifd).update(tags)
    any_exif = len(kept) or any(subs.values())  # a sub-IFD alone is not counted in len(kept)
    if dpi and exif.get(0x0112) in (5, 6, 7, 8):  # turned a quarter: the pixels' rows were its columns
      dpi = tuple(dpi)[::-1]
    if dpi and not all(0 < d / 0.0254 + 0.5 < 2 ** 32 for d in dpi):  # PNG's pixels per metre: 32 bits
      dpi = None  # a TIFF's unset resolution (0/0: NaN) or an absurd one, which PNG's writer raises on
    return {**({"exif": kept.tobytes()} if any_exif else {}), **({"dpi": tuple(dpi)} if dpi else {})}
  except Exception as e:  # noqa: BLE001 -- Pillow's EXIF parser and writer raise many kinds on odd tags
    _metadata_not_kept(name or path, e)
    return {}


def _declared_dpi(img: Image.Image, exif: Image.Exif) -> tuple[float, float] | None:
  """The resolution the file declares, or None. Pillow reads a JPEG that declares none in its JFIF
  header, and has EXIF without a resolution in it, as 72 dpi, and a TIFF without XResolution as
  1 dpi: sizes the photo never claimed (1 dpi would print a 1000-pixel photo 25 m wide)."""
  if img.format == "JPEG":
    declared = (img.info.get("jfif_unit") in (1, 2)                      # dots per inch or per cm
                or (0x011A in exif and 0x0128 in exif))                  # EXIF XResolution and its unit
  else:
    declared = img.format != "TIFF" or 0x011A in img.tag_v2              # TIFF's own XResolution
  return img.info.get("dpi") if declared else None


def _metadata_not_kept(photo: Any, e: BaseException) -> None:
  logging.info("%s: its EXIF and resolution are not kept (%s: %s)", photo, type(e).__name__, e)


def save_png(image: np.ndarray, target: str | BinaryIO, photo: str | os.PathLike | BinaryIO | None = None,
             name: str | None = None) -> None:
  """`image` as a PNG in `target`, with what it keeps of `photo` (`photo_metadata`); where PNG's
  writer refuses that metadata, without it: one photo's odd tags must not end a run of many."""
  metadata = {} if photo is None else photo_metadata(photo, name)
  try:
    Image.fromarray(image).save(target, format="PNG", **metadata)
  except (ValueError, TypeError, OverflowError, struct.error) as e:
    if not metadata:
      raise
    _metadata_not_kept(name or photo, e)
    if not isinstance(target, str):
      target.seek(0)
      target.truncate()
    Image.fromarray(image).save(target, format="PNG")


def _inside(path: Path, folder: Path | None) -> bool:
  return folder is not None and Path(os.path.realpath(path)).is_relative_to(folder)  # never raises on a link loop


def _walk(folder: Path, exclude: Path | None, others: list[str] | None = None,
          problems: list[str] | None = None) -> Iterator[Path]:
  """Image files under `folder`, sorted, skipping hidden names and the output tree; the other
  files go to `others`, folders that cannot be listed and links to nothing to `problems`."""
  files, unlisted = list_tree(folder)
  if problems is not None:
    problems += unlisted
  for f in files:
    if any(part.startswith(".") for part in f.relative_to(folder).parts) or _inside(f, exclude):
      continue
    if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS:
      yield f
    elif f.is_file() and others is not None:
      others.append(str(f))


def collect_inputs(inputs: Sequence[str], exclude: str | None = None, others: list[str] | None = None,
                   problems: list[str] | None = None) -> list[tuple[str, str]]:
  """(input file, output path relative to --out) for files, folders and glob patterns.

  Folders are walked recursively (and the folders a glob matches), and a glob keeps the tree
  below its first wildcard, so the output mirrors the input. Inputs that hold the same file
  name (album/x.jpg, scans/x.jpg) each go under their own name (album/..., scans/...); two
  files that would still share an output name (a.jpg, a.png) keep their extension in it
  (a.jpg.png, a.png.png).
  `exclude` (the output folder) is not walked. Files in the folders that are not images of a
  kind colorize reads (by extension: .gif, .heic, .txt ...) are added to `others`; folders that
  cannot be listed and links that lead nowhere, one line each, to `problems`.
  """
  skip = Path(os.path.realpath(exclude)) if exclude else None
  found: list[tuple[Path, Path, int]] = []  # (file, path below its input, which input)
  tops = [Path(os.path.basename(os.path.realpath(item))) for item in inputs]
  for i, item in enumerate(inputs):
    path = Path(item)
    if path.is_dir():
      found += [(f, f.relative_to(path), i) for f in _walk(path, skip, others, problems)]
    elif glob.has_magic(item) and not path.exists():
      base = Path(*[p for p in path.parts[:next(j for j, p in enumerate(path.parts) if glob.has_magic(p))]])
      tops[i] = Path(os.path.basename(os.path.realpath(base)))
      matches = [m for m in sorted(Path(m) for m in glob.glob(item, recursive=True)) if not _inside(m, skip)]
      for m in matches:  # as a folder's tree: folders walked, files of other kinds noted
        if m.is_dir():
          found += [(f, f.relative_to(base), i) for f in _walk(m, skip, others, problems)]
        elif others is None or m.suffix.lower() in IMAGE_EXTENSIONS:
          found.append((m, m.relative_to(base), i))
        else:
          others.append(str(m))
      if not matches:
        found.append((path, Path(path.name), i))  # said to match nothing
    else:
      tops[i] = Path(os.path.basename(os.path.dirname(os.path.realpath(path))))
      found.append((path, Path(path.name), i))
  seen, unique = set(), []
  for entry in found:
    key = os.path.realpath(entry[0])
    if key not in seen:
      seen.add(key)
      unique.append(entry)
  owners: dict[Path, set[int]] = {}
  for _, rel, i in unique:
    owners.setdefault(rel, set()).add(i)
  nested = set().union(*[s for s in owners.values() if len(s) > 1])
  rels = [(src, tops[i] / rel if i in nested else rel) for src, rel, i in unique]
  stem = lambda rel: str(rel.with_suffix("")).casefold()  # X.JPG and x.tif: one x.png on macOS and Windows
  stems = collections.Counter(stem(rel) for _, rel in rels)
  named = lambda rel, whole: rel.parent / (rel.name + ".png") if whole else rel.with_suffix(".png")
  outs = [named(rel, stems[stem(rel)] > 1) for _, rel in rels]
  # a.jpg's a.jpg.png can still be a.jpg.png's own: that one keeps its whole name too (a.jpg.png.png)
  taken = collections.Counter(str(out).casefold() for out in outs)
  return [(str(src), str(named(rel, True) if taken[str(out).casefold()] > 1 else out))
          for (src, rel), out in zip(rels, outs)]


def _batches(jobs: list[tuple[str, str, int, int]], colorizer: Colorizer) -> Iterator[list[tuple[str, str, int, int]]]:
  """Jobs (src, dst, h, w) grouped by render shape, in batches bounded by count and pixels."""
  groups: dict[tuple[int, int], list] = {}
  for job in jobs:
    groups.setdefault(colorizer.render_shape(job[2], job[3]), []).append(job)
  for group in groups.values():
    batch, pixels = [], 0
    for job in group:
      if batch and (len(batch) == colorizer.batch_size or pixels + job[2] * job[3] > _BATCH_PIXELS):
        yield batch
        batch, pixels = [], 0
      batch.append(job)
      pixels += job[2] * job[3]
    yield batch


def colorize_files(colorizer: Colorizer, inputs: Sequence[str], out_dir: str,
                   max_pixels: int = DEFAULT_MAX_PIXELS, overwrite: bool = False,
                   skip_existing: bool = False,
                   collected: tuple[list[tuple[str, str]], list[str]] | None = None) -> int:
  """Writes one PNG per input; returns the number of failures (each reported in one line).

  A file already at an output path is kept: a failure for that input, or with `skip_existing`
  counted as done (PNGs are written whole or not at all, so a re-run finishes an interrupted
  one); `overwrite` replaces it.
  """
  if collected is None:  # else `main` walked the inputs already: (their pairs, its problems)
    problems: list[str] = []
    collected = collect_inputs(inputs, exclude=out_dir, problems=problems), problems
  pairs, problems = collected
  sources = {os.path.realpath(src) for src, _ in pairs}
  failures = done_count = kept = 0
  with tqdm(total=len(pairs), unit="photo", file=sys.stderr, disable=None) as bar:

    def fail(e: BadImageError) -> None:
      nonlocal failures
      failures += 1
      hint = ""
      if isinstance(e, TooManyPixelsError):
        hint = f"; if you trust the file, pass --max-pixels={e.pixels or 'N'}"
      bar.write(f"error: {e}{hint}", file=sys.stderr)
      bar.update()

    for problem in problems:
      failures += 1
      bar.write(f"error: {problem}", file=sys.stderr)
    jobs, written_by = [], {}
    for src, rel in pairs:
      dst = os.path.join(out_dir, rel)
      try:
        if os.path.realpath(dst) in sources:
          raise BadImageError(f"{src}: output {dst} would overwrite an input; choose another --out")
        if written_by.setdefault(dst.casefold(), src) != src:  # one file on macOS and Windows
          raise BadImageError(f"{src}: {dst} is already the output of {written_by[dst.casefold()]}; "
                              "colorize one of them into another --out")
        if not overwrite and os.path.lexists(dst):
          if skip_existing:
            kept += 1
            bar.update()
            continue
          raise BadImageError(f"{src}: {dst} already exists; pass --overwrite to replace it "
                              "(or --skip-existing to keep it)")
        jobs.append((src, dst, *probe(src, max_pixels)))
      except BadImageError as e:
        fail(e)
    for batch in _batches(jobs, colorizer):
      images, done = [], []
      for src, dst, _, _ in batch:
        try:
          rgb, alpha = open_image(src, composite=False)
          images.append(with_alpha(rgb, alpha))
          done.append((src, dst))
        except BadImageError as e:
          fail(e)
      for (src, dst), out in zip(done, colorizer.colorize_batch(images)):
        try:
          os.makedirs(os.path.dirname(dst) or ".", exist_ok=True)
          with shards.local_path_for(dst, overwrite) as tmp:  # renamed when whole: a killed run leaves no half PNG
            save_png(out, tmp, src)
        except FileExistsError as e:
          appeared = not overwrite and os.path.isfile(dst)  # not a file where a folder of dst's path should be
          fail(BadImageError(f"{src}: {dst} appeared while colorizing; kept it (pass --overwrite to replace it)"
                             if appeared else f"{src}: cannot write {dst} ({e.strerror or e})"))
          continue
        except OSError as e:
          fail(BadImageError(f"{src}: cannot write {dst} ({e.strerror or e})"))
          continue
        done_count += 1
        bar.update()
        bar.write(f"[{done_count + failures + kept}/{len(pairs)}] {src} -> {dst}", file=sys.stdout)
  if kept:
    print(f"{kept} already in {out_dir}: kept (--skip-existing)", file=sys.stderr)
  return failures


def parse_flags(argv: list[str]) -> list[str]:
  """absl's parser for the commands: also takes `--max-pixels` for `--max_pixels` (the usual CLI
  spelling), keeps orbax's and JAX's INFO lines off the console (`cli.quiet_console`), and says
  what it cannot parse in one `error:` line, as train does (absl's own is a FATAL line and a hint)."""
  cli.quiet_console()
  end = argv.index("--") if "--" in argv else len(argv)
  underscored = [re.sub(r"^--([^=]+)", lambda m: "--" + m.group(1).replace("-", "_"), a) for a in argv[:end]]
  try:
    return FLAGS(underscored + argv[end:])
  except flags.Error as e:
    cli.exit_with_error(e)


def main(argv: list[str]) -> None:
  inputs = argv[1:]
  if not inputs:
    raise app.UsageError("give at least one image file, folder or glob pattern to colorize")
  cli.cache_compilations()
  for name, least in (("batch_size", 1), ("render_size", 0), ("max_pixels", 1)):
    if FLAGS[name].value < least:
      raise app.UsageError(f"--{name.replace('_', '-')} must be at least {least}, got {FLAGS[name].value}")
  if os.path.exists(FLAGS.out) and not os.path.isdir(FLAGS.out):
    raise app.UsageError(f"--out {FLAGS.out} is a file: give a folder")
  others: list[str] = []
  problems: list[str] = []
  pairs = collect_inputs(inputs, exclude=FLAGS.out, others=others, problems=problems)
  total = len(pairs)
  if others:  # a phone's HEIC or GIF files would otherwise vanish without a word
    names = ", ".join(os.path.basename(f) for f in others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
    print(f"note: left alone, not {'/'.join(IMAGE_EXTENSIONS)} images: {names}", file=sys.stderr)
  if not total:
    for problem in problems:
      print(f"error: {problem}", file=sys.stderr)
    inside = f"; the ones inside --out {FLAGS.out} are never read: choose another --out" if collect_inputs(inputs) else ""
    print(f"error: no images in {' '.join(inputs)} (looked for {', '.join(IMAGE_EXTENSIONS)}){inside}", file=sys.stderr)
    sys.exit(1)
  try:
    cli.check_writable(FLAGS.out, "--out")  # before the model loads and every photo is colorized
    colorizer = Colorizer.from_workdir(FLAGS.workdir, FLAGS.checkpoint, FLAGS.render_size or None,
                                       FLAGS.batch_size, FLAGS.temperature or None,
                                       prior_correction_flag(), FLAGS.colour_at_render_size)
  except (FileNotFoundError, ValueError) as e:
    cli.exit_with_error(e)
  try:
    failures = colorize_files(colorizer, inputs, FLAGS.out, FLAGS.max_pixels, FLAGS.overwrite, FLAGS.skip_existing,
                              collected=(pairs, problems))
  except jax.errors.JaxRuntimeError as e:
    cli.exit_if_out_of_memory(e, f"--batch-size (now {colorizer.batch_size}) or --render-size (now "
                                 f"{colorizer.render_size})", " with --skip-existing to keep the photos written")
    raise
  if failures:
    print(f"{failures} of {total + len(problems)} inputs failed", file=sys.stderr)
  sys.exit(1 if failures else 0)


FLAGS = flags.FLAGS

if __name__ == "__main__":
  flags.DEFINE_string("workdir", None, "Training workdir with config.json and checkpoints/")
  flags.DEFINE_string("out", "colorized", "Output folder (one PNG per input, same stem unless two "
                      "inputs share one: a.jpg.png, a.png.png; tree kept)")
  flags.DEFINE_string("checkpoint", "", CHECKPOINT_HELP)
  flags.DEFINE_integer("render_size", 0, "Short side the model sees (default: the training image_size); "
                       "larger keeps more detail, smaller gives surer colour")
  flags.DEFINE_boolean("colour_at_render_size", False, COLOUR_AT_RENDER_SIZE_HELP)
  flags.DEFINE_integer("batch_size", 8, "Photos of the same render shape colorized in one device call")
  flags.DEFINE_float("temperature", 0, "ab-class models: annealed-mean temperature (0: the trained "
                     "config's); lower is bolder, 1 is the safe mean")
  flags.DEFINE_float("prior_correction", -1, PRIOR_CORRECTION_HELP)
  flags.DEFINE_integer("max_pixels", DEFAULT_MAX_PIXELS, "Refuse larger images (decompression-bomb guard)")
  flags.DEFINE_boolean("overwrite", False, "Replace files already in --out (default: keep them, report each)")
  flags.DEFINE_boolean("skip_existing", False, "Keep files already in --out and count them as done "
                       "(re-running an interrupted command finishes it)")
  flags.mark_flags_as_required(["workdir"])
  cli.run(main, flags_parser=parse_flags)
