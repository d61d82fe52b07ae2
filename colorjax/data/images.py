"""Decoding any photo a user has into uint8 sRGB, and telling colour photos from gray ones.

Handles EXIF orientation, grayscale / palette / CMYK / alpha / 16-bit and float images.
Every failure is a `BadImageError` that names the file and the problem, so callers can skip
one photo with one warning line instead of dying.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import os
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageCms, ImageFile, ImageOps

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
# A photo whose 99th-percentile channel spread is below this (in uint8 levels) is gray:
# JPEG chroma noise on true grayscale photos stays well under it, real colour is far above.
GRAY_SPREAD_THRESHOLD = 12
MAX_ASPECT = 4.0  # training and prepare use a window of a longer strip (the shared photos reach 3.4)

ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error, not a gray stripe
# Larger images are refused as possible decompression bombs, by every command alike: with PIL's
# own 89.5 MP, training, prepare and evaluate left out photos colorize read (until it had raised
# the limit for its --max-pixels, after which the same process read them too).
MAX_PIXELS = 100_000_000  # a 100-MP photo still fits in ~2 GB
if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < MAX_PIXELS:
  Image.MAX_IMAGE_PIXELS = MAX_PIXELS


class BadImageError(ValueError):
  """An input that cannot be used as a photo; the message names the file and the reason."""


class GrayscaleError(BadImageError):
  """A photo with no colour: nothing to learn from or score against (left out, not an error)."""


READ_ERRORS = (RuntimeError, OSError)  # a random-access source's failed read: riegeli's for a damaged chunk; the disk's


@dataclasses.dataclass(frozen=True)
class Unreadable:
  """Stands in for a record its source could not read (a damaged ArrayRecord chunk: riegeli's
  RuntimeError names no file), so it is skipped by name as a damaged photo is: grain reads the
  source before the map that skips bad photos, where an exception would end the run."""
  name: str
  why: str

  @classmethod
  def of(cls, name: str, error: BaseException) -> "Unreadable":
    return cls(name, " ".join(str(error).split()))

  def error(self) -> BadImageError:
    return BadImageError(f"{self.name}: cannot be read ({self.why})")


_SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


@functools.lru_cache(maxsize=16)
def _transform_to_srgb(icc: bytes, mode: str) -> ImageCms.ImageCmsTransform | None:
  """The transform of `mode` pixels under the ICC profile `icc` to sRGB; None for a profile
  named sRGB (nothing to convert) or one that cannot be read or applied. Cached: a dataset's
  photos share a few profiles, and reading one and building its transform per photo, in the
  input pipeline, would be work done again for every photo of every epoch."""
  try:
    profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
    if "srgb" in ImageCms.getProfileDescription(profile).lower():
      return None
    return ImageCms.buildTransform(profile, _SRGB, mode, "RGB")
  except (OSError, ValueError, ImageCms.PyCMSError):  # a damaged profile, or one for another kind of image
    return None


def to_srgb(img: Image.Image) -> Image.Image:
  """`img` converted to sRGB where it embeds another ICC profile (Adobe RGB, Display P3, a
  scanner's or Photoshop's gray gamma): its values mean other colours and lightness than sRGB's,
  and the model, its training photos and the PNGs colorjax writes are sRGB. A gray photo
  tagged Gray Gamma 1.8 read as sRGB came out up to 8 L units darker than a viewer shows it.
  A profile named sRGB, or one that cannot be read or applied, leaves the values as they are."""
  icc = img.info.get("icc_profile")
  if not icc or img.mode not in ("RGB", "L", "CMYK", "RGBA", "LA"):
    return img
  has_alpha = img.mode in ("RGBA", "LA")
  transform = _transform_to_srgb(icc, img.mode[:-1] if has_alpha else img.mode)
  if transform is None:
    return img
  colour = img.convert(img.mode[:-1]) if has_alpha else img
  try:
    out = ImageCms.applyTransform(colour, transform)
  except (ValueError, ImageCms.PyCMSError):
    return img
  if has_alpha:
    out.putalpha(img.getchannel("A"))
  return out


def to_rgb(img: Image.Image, composite: bool = True) -> tuple[Image.Image, np.ndarray | None]:
  """Any PIL mode -> (8-bit sRGB image, alpha as uint8 [H, W] or None); see `open_image`."""
  img = to_srgb(img)
  alpha = None
  if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
    arr = np.asarray(img, dtype=np.float64)
    # 16-bit modes always span 0..65535 (a dark 16-bit scan stays dark); 32-bit "I" and "F"
    # carry no range, so it is guessed from the values: [0, 1] (float), 255 or 65535, and
    # anything else is refused rather than shown black or white.
    if img.mode.startswith("I;16"):
      scale = 65535.0
    else:
      lo, hi = arr.min(), arr.max()
      if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError("32-bit samples with NaN or infinite values")
      if lo < -1e-3 * max(hi, 1.0) or hi > 65535:  # a resampled float image may undershoot 0 a little
        raise ValueError(f"32-bit samples span [{lo:g}, {hi:g}], not a range of light levels this can "
                         "tell (0..1, 0..255 or 0..65535): save it as an 8- or 16-bit image")
      scale = 1.0 if img.mode == "F" and hi <= 1.0 else (65535.0 if hi > 255 else 255.0)
    arr = np.clip(np.round(arr / scale * 255.0), 0, 255).astype(np.uint8)
    img = Image.fromarray(arr, mode="L")
  if img.mode in ("P", "1", "L", "RGB") and img.info.get("transparency") is not None:
    img = img.convert("RGBA")  # a transparent colour (PNG tRNS, GIF): an alpha channel
  if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
    rgba = img.convert("RGBA")
    alpha = np.asarray(rgba.getchannel("A"))
    if not composite:
      return rgba.convert("RGB"), alpha
    flat = Image.new("RGB", rgba.size, (255,) * 3)
    flat.paste(rgba, mask=rgba.getchannel("A"))
    return flat, alpha
  if img.mode != "RGB":
    img = img.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV
  return img, alpha


def with_alpha(rgb: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
  """`open_image`'s (rgb, alpha) as one array: [H, W, 3], or [H, W, 4] with the alpha."""
  return rgb if alpha is None else np.dstack([rgb, alpha])


def why_unidentified(source: str | os.PathLike | BinaryIO) -> str:
  """Why PIL could not identify an image, from its first bytes."""
  if isinstance(source, (str, os.PathLike)):
    with open(source, "rb") as f:
      head = f.read(4)
  else:
    source.seek(0)
    head = source.read(4)
  if not head:
    return "the file is empty"
  if head in (b"II*\0", b"MM\0*"):
    return "a TIFF of a kind that cannot be read (e.g. 32-bit float samples, or a compression PIL lacks)"
  return "not a JPEG, PNG, WebP, BMP or TIFF image"


def open_image(source: str | os.PathLike | bytes | BinaryIO, draft_size: int | None = None,
               name: str | None = None, composite: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
  """Decodes a photo to (uint8 RGB [H, W, 3], alpha [H, W] or None), EXIF-rotated.

  `composite`: the RGB of a photo with transparency is what it looks like on white, the photo
  to learn from and score. False gives its pixels' own colour, for a caller that puts the alpha
  back (laid on white and then given its alpha again, a half-transparent pixel would be
  blended with the background twice: paler).

  `draft_size` lets the JPEG decoder downscale by a power of two while keeping both sides
  >= draft_size: a 12-MP photo wanted at 256 px then decodes ~30x faster.
  """
  name = name or (str(source) if not isinstance(source, (bytes, io.IOBase)) else "<bytes>")
  if isinstance(source, bytes):
    source = io.BytesIO(source)
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("error", Image.DecompressionBombWarning)
      with Image.open(source) as img:
        if draft_size and img.format == "JPEG":
          img.draft("RGB", (draft_size, draft_size))
        img.load()
        img = ImageOps.exif_transpose(img) or img
        rgb, alpha = to_rgb(img, composite)
        arr = np.asarray(rgb, dtype=np.uint8)
  except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
    raise BadImageError(f"{name}: too many pixels for a photo ({e})") from None
  except FileNotFoundError:
    raise BadImageError(f"{name}: no such file") from None
  except Image.UnidentifiedImageError:
    raise BadImageError(f"{name}: {why_unidentified(source)}") from None
  except (OSError, ValueError, SyntaxError) as e:
    raise BadImageError(f"{name}: unreadable image ({e})") from None
  if arr.ndim != 3 or arr.shape[0] < 1 or arr.shape[1] < 1:
    raise BadImageError(f"{name}: empty image")
  return arr, alpha


def list_tree(root: str | os.PathLike) -> tuple[list[Path], list[str]]:
  """(every file under `root`, sorted; one line for each folder that cannot be listed, each link
  that leads nowhere, and each link to a folder listed already). Not `Path.rglob`, which drops
  an unreadable folder without a word. Linked folders are entered (a folder of links to datasets
  is common; skipped, such a folder looked empty), each real folder once: a second way to one
  (a loop, or two links to it) is named, not listed again. A folder inside `root` is always
  listed under its own path, wherever a link to it stands: the hash split goes by the path, and
  a link to a sibling folder listed first would move its photos between train and eval."""
  files, problems, listed = [], [], set()
  own_path = {}  # the real folders inside root, by the path that reaches them without a link
  for folder, _, _ in os.walk(root):
    own_path.setdefault(os.path.realpath(folder), folder)

  def unlisted(e: OSError) -> None:
    problems.append(f"{e.filename}: cannot list this folder ({e.strerror or e})")

  for folder, folders, names in os.walk(root, onerror=unlisted, followlinks=True):
    real = os.path.realpath(folder)
    if real in listed or own_path.get(real, folder) != folder:
      where = "under its own path" if real in own_path else "already"
      problems.append(f"{folder}: a link to {real}, which is listed {where}: not listed again")
      folders.clear()
      continue
    listed.add(real)
    folders.sort(key=lambda name: (os.path.islink(os.path.join(folder, name)), name))
    for name in names:
      path = Path(folder, name)
      if path.is_symlink() and not path.exists():
        problems.append(f"{path}: a symbolic link that leads nowhere (broken, or a loop)")
      else:
        files.append(path)
  return sorted(files), problems


def is_grayscale(rgb: np.ndarray) -> bool:
  """True for photos with no real colour (the L channel is all they carry)."""
  x = rgb[:: max(1, rgb.shape[0] // 128), :: max(1, rgb.shape[1] // 128)].astype(np.int16)
  spread = np.max(np.abs(x - np.roll(x, 1, axis=-1)), axis=-1)
  return float(np.percentile(spread, 99)) < GRAY_SPREAD_THRESHOLD


def within_aspect(rgb: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
  """`rgb`, or its window MAX_ASPECT times as long as its short side: the middle one, or one at
  a random place with `rng`. Resized whole to a crop's short side, a 1x3000 banner would take
  gigabytes (and a JPEG cannot be wider than 65500 px)."""
  h, w = rgb.shape[:2]
  longest = int(MAX_ASPECT * min(h, w))
  if max(h, w) <= longest:
    return rgb
  excess = max(h, w) - longest
  start = int(rng.integers(0, excess + 1)) if rng is not None else excess // 2
  return rgb[start:start + longest] if h > w else rgb[:, start:start + longest]


def resize_short_side(rgb: np.ndarray, size: int) -> np.ndarray:
  """Resizes so the shorter side is `size` (bicubic, aspect kept)."""
  h, w = rgb.shape[:2]
  scale = size / min(h, w)
  new = (max(size, round(w * scale)), max(size, round(h * scale)))
  if new == (w, h):
    return rgb
  return np.asarray(Image.fromarray(rgb).resize(new, Image.BICUBIC, reducing_gap=3.0))


def center_crop(rgb: np.ndarray, size: int) -> np.ndarray:
  h, w = rgb.shape[:2]
  top, left = (h - size) // 2, (w - size) // 2
  return rgb[top:top + size, left:left + size]
