"""Decoding, folder listing/splitting, scanning and the grain pipelines, on generated files."""

import hashlib
import io
import logging
import os
import shutil
import struct
import subprocess
import sys
from unittest import mock

import numpy as np
import pytest
from PIL import Image

from colorjax.data import images, pipeline, sources
from colorjax.data.images import BadImageError, is_grayscale, open_image


def colourful(h, w, seed=0):
  """A smooth, clearly colourful uint8 RGB image."""
  rng = np.random.default_rng(seed)
  y, x = np.mgrid[0:h, 0:w] / max(h, w, 1)
  img = np.stack([x, y, 1 - x * y], -1) * rng.uniform(0.5, 1.0, 3)
  img[: h // 2, : w // 2] = rng.uniform(0, 1, 3)
  return (img * 255).astype(np.uint8)


def gray_photo(h, w, seed=0):
  """A gray gradient with gray noise, uint8 [H, W]."""
  rng = np.random.default_rng(seed)
  y, x = np.mgrid[0:h, 0:w]
  g = 40 + 150 * (x + y) / (h + w) + rng.normal(0, 6, (h, w))
  return np.clip(g, 0, 255).astype(np.uint8)


def save(arr_or_img, path, **kw):
  img = arr_or_img if isinstance(arr_or_img, Image.Image) else Image.fromarray(arr_or_img)
  img.save(path, **kw)
  return str(path)


def truncated_jpeg(path):
  buf = io.BytesIO()
  Image.fromarray(colourful(120, 160)).save(buf, "JPEG", quality=90)
  data = buf.getvalue()
  path.write_bytes(data[: len(data) // 2])
  return str(path)


def bad_files(folder):
  """A truncated JPEG, a text file named .jpg and an empty .png."""
  return [truncated_jpeg(folder / "cut.jpg"),
          _write(folder / "notes.jpg", b"this is not a photo\n"),
          _write(folder / "empty.png", b"")]


def _write(path, data):
  path.write_bytes(data)
  return str(path)


# ---------------------------------------------------------------- open_image


def test_open_grayscale_l(tmp_path):
  g = gray_photo(20, 30)
  rgb, alpha = open_image(save(g, tmp_path / "g.png"))
  assert rgb.dtype == np.uint8 and rgb.shape == (20, 30, 3) and alpha is None
  for c in range(3):
    np.testing.assert_array_equal(rgb[..., c], g)


def test_open_palette(tmp_path):
  colours = [(255, 0, 0), (0, 128, 255), (10, 200, 30)]
  idx = np.zeros((6, 9), np.uint8)
  idx[:, 3:6], idx[:, 6:] = 1, 2
  img = Image.fromarray(idx, "P")
  img.putpalette([v for c in colours for v in c] + [0] * (768 - 9))
  rgb, alpha = open_image(save(img, tmp_path / "p.png"))
  assert alpha is None and rgb.shape == (6, 9, 3)
  np.testing.assert_array_equal(rgb[0, 0], colours[0])
  np.testing.assert_array_equal(rgb[0, 4], colours[1])
  np.testing.assert_array_equal(rgb[5, 8], colours[2])

  # index 0 transparent: alpha 0 there, composited on white
  rgb, alpha = open_image(save(img, tmp_path / "pt.png", transparency=0))
  assert alpha is not None and alpha.shape == (6, 9)
  assert (alpha[:, :3] == 0).all() and (alpha[:, 3:] == 255).all()
  assert (rgb[:, :3] == 255).all()
  np.testing.assert_array_equal(rgb[0, 4], colours[1])


def test_open_rgba_composites_on_white(tmp_path):
  arr = np.zeros((4, 6, 4), np.uint8)
  arr[..., :3] = (200, 0, 0)
  arr[..., 3] = np.array([0, 255, 128, 255, 0, 255], np.uint8)
  rgb, alpha = open_image(save(arr, tmp_path / "a.png"))
  np.testing.assert_array_equal(alpha, arr[..., 3])
  np.testing.assert_array_equal(rgb[0, 0], (255, 255, 255))   # transparent -> white
  np.testing.assert_array_equal(rgb[0, 1], (200, 0, 0))       # opaque -> itself
  # half transparent: a blend of red and white
  assert abs(int(rgb[0, 2, 0]) - 228) <= 2 and abs(int(rgb[0, 2, 1]) - 127) <= 2
  # for a caller that keeps the alpha: every pixel's own colour, not blended twice
  rgb, alpha = open_image(save(arr, tmp_path / "a.png"), composite=False)
  np.testing.assert_array_equal(rgb, arr[..., :3])
  np.testing.assert_array_equal(alpha, arr[..., 3])


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_a_transparent_colour_is_an_alpha_channel(tmp_path, mode):
  """PNG's tRNS: gray or RGB images with one colour marked transparent."""
  arr = np.full((4, 6), 90, np.uint8)
  arr[:, :2] = 7
  img = Image.fromarray(arr if mode == "L" else np.dstack([arr] * 3), mode)
  rgb, alpha = open_image(save(img, tmp_path / "t.png", transparency=7 if mode == "L" else (7, 7, 7)))
  assert alpha is not None and (alpha[:, :2] == 0).all() and (alpha[:, 2:] == 255).all()
  assert (rgb[:, :2] == 255).all() and (rgb[:, 2:] == 90).all()


def test_open_la(tmp_path):
  la = np.zeros((5, 5, 2), np.uint8)
  la[..., 0] = 50
  la[..., 1] = 255
  la[0, 0, 1] = 0
  rgb, alpha = open_image(save(Image.fromarray(la, "LA"), tmp_path / "la.png"))
  np.testing.assert_array_equal(alpha, la[..., 1])
  np.testing.assert_array_equal(rgb[1, 1], (50, 50, 50))
  np.testing.assert_array_equal(rgb[0, 0], (255, 255, 255))


def test_open_cmyk_jpeg(tmp_path):
  img = Image.new("CMYK", (32, 16), (0, 0, 0, 0))
  img.paste((255, 0, 0, 0), (16, 0, 32, 16))   # full cyan -> (0, 255, 255)
  rgb, alpha = open_image(save(img, tmp_path / "c.jpg", quality=95))
  assert alpha is None and rgb.shape == (16, 32, 3)
  assert np.abs(rgb[8, 4].astype(int) - 255).max() <= 3
  assert np.abs(rgb[8, 28].astype(int) - (0, 255, 255)).max() <= 3


def gray_gamma_profile(gamma: float, name: str) -> bytes:
  """A minimal ICC v2 gray display profile (D50 white, a pure gamma curve), as Photoshop's
  "Gray Gamma 1.8"; Pillow can only make sRGB, LAB and XYZ ones."""
  s15 = lambda x: struct.pack(">i", round(x * 65536))
  white = s15(0.9642) + s15(1.0) + s15(0.8249)
  text = name.encode() + b"\0"
  tags = [(b"desc", b"desc" + bytes(4) + struct.pack(">I", len(text)) + text + bytes(4 + 4 + 2 + 1 + 67)),
          (b"wtpt", b"XYZ " + bytes(4) + white),
          (b"kTRC", b"curv" + bytes(4) + struct.pack(">IH", 1, round(gamma * 256)) + bytes(2)),
          (b"cprt", b"text" + bytes(4) + b"none\0")]
  table, data, start = struct.pack(">I", len(tags)), b"", 128 + 4 + 12 * len(tags)
  for signature, body in tags:
    data += bytes(-(start + len(data)) % 4)
    table += signature + struct.pack(">II", start + len(data), len(body))
    data += body
  header = (struct.pack(">I", start + len(data)) + b"lcms" + bytes([2, 0x10, 0, 0]) + b"mntrGRAYXYZ " + bytes(12)
            + b"acspAPPL" + bytes(24) + white + b"lcms" + bytes(44))
  return header + table + data


def test_a_photo_in_another_colour_space_is_read_as_the_srgb_it_shows(tmp_path):
  """Found 2026-12-02: an embedded ICC profile was ignored, so a scan tagged Gray Gamma 1.8 read
  as sRGB came out up to 8 L units darker than a colour-managed viewer shows it."""
  v = np.tile(np.arange(256, dtype=np.uint8), (4, 1))
  Image.fromarray(v).save(tmp_path / "gamma18.png", icc_profile=gray_gamma_profile(1.8, "Gray Gamma 1.8"))
  rgb, _ = open_image(tmp_path / "gamma18.png")
  linear = (v / 255.0) ** 1.8  # what the file's values mean, then as sRGB encodes it (IEC 61966-2-1)
  want = 255 * np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055)
  assert np.abs(rgb[..., 0] - want).max() <= 1.5 and (rgb[..., 0] == rgb[..., 2]).all()
  assert (rgb[:, 100:200, 0].astype(int) - v[:, 100:200]).min() >= 10  # lighter than the values read as sRGB
  # With its alpha kept; and a profile named sRGB (a camera's) leaves the values as they are.
  Image.fromarray(np.dstack([v, np.full_like(v, 128)]), "LA").save(
      tmp_path / "la.png", icc_profile=gray_gamma_profile(1.8, "Gray Gamma 1.8"))
  _, alpha = open_image(tmp_path / "la.png", composite=False)
  assert (alpha == 128).all() and (open_image(tmp_path / "la.png", composite=False)[0] == rgb).all()
  srgb = Image.fromarray(np.dstack([v, v // 2, v // 3]), "RGB")
  srgb.save(tmp_path / "srgb.png", icc_profile=images.ImageCms.ImageCmsProfile(images.ImageCms.createProfile("sRGB")).tobytes())
  assert (open_image(tmp_path / "srgb.png")[0] == np.asarray(srgb)).all()


def test_open_16bit_png(tmp_path):
  v = np.linspace(0, 65535, 7 * 11).reshape(7, 11).astype(np.uint16)
  img = Image.fromarray(v)
  assert img.mode.startswith("I;16")
  rgb, _ = open_image(save(img, tmp_path / "d.png"))
  assert rgb.shape == (7, 11, 3)
  expected = np.round(v / 257.0)
  assert np.abs(rgb[..., 0].astype(int) - expected).max() <= 1
  np.testing.assert_array_equal(rgb[..., 0], rgb[..., 2])


def test_open_dark_16bit_png_stays_dark(tmp_path):
  v = np.arange(0, 200, 2, dtype=np.uint16).reshape(10, 10)  # a 16-bit scan that uses < 1 % of its range
  rgb, _ = open_image(save(Image.fromarray(v), tmp_path / "dark.png"))
  np.testing.assert_array_equal(rgb[..., 0], np.round(v / 257.0).astype(np.uint8))


@pytest.mark.parametrize("values, mode, expected", [
    (np.linspace(0, 1, 12), "F", np.linspace(0, 255, 12)),           # float light levels in [0, 1]
    (np.linspace(0, 255, 12), "I", np.linspace(0, 255, 12)),         # 8-bit levels in a 32-bit TIFF
    (np.linspace(0, 65535, 12), "I", np.linspace(0, 255, 12)),       # 16-bit levels in a 32-bit TIFF
    (np.linspace(0, 1020, 12), "F", np.linspace(0, 1020, 12) / 257),  # read as 16-bit levels: dark
    (np.linspace(-1, 1, 12), "F", None), (np.linspace(-1e-4, 1, 12), "F", np.linspace(0, 255, 12)),  # undershoot
    (np.linspace(0, 3e9, 12) - 2 ** 31, "I", None), (np.array([0.5] * 11 + [np.nan]), "F", None)])
def test_32bit_samples_in_a_range_that_cannot_be_told_are_refused_not_shown_black(tmp_path, values, mode, expected):
  path = tmp_path / "deep.tif"
  Image.fromarray(values.reshape(3, 4).astype(np.float32 if mode == "F" else np.int32), mode).save(path)
  if expected is None:
    with pytest.raises(BadImageError, match="deep.tif: unreadable image \\(32-bit samples"):
      open_image(path)
  else:
    np.testing.assert_allclose(open_image(path)[0][..., 1], expected.reshape(3, 4), atol=1)


def test_open_one_pixel(tmp_path):
  rgb, _ = open_image(save(np.array([[[10, 20, 30]]], np.uint8), tmp_path / "one.png"))
  np.testing.assert_array_equal(rgb, [[[10, 20, 30]]])


def test_open_exif_orientation(tmp_path):
  arr = np.zeros((40, 80, 3), np.uint8)
  arr[:, :] = (0, 0, 255)
  arr[:10, :10] = (255, 0, 0)      # stored top-left
  img = Image.fromarray(arr)
  exif = img.getexif()
  exif[0x0112] = 6                 # display rotated 90 degrees clockwise
  path = save(img, tmp_path / "rot.jpg", exif=exif, quality=95)
  rgb, _ = open_image(path)
  assert rgb.shape == (80, 40, 3)
  # clockwise: the stored top-left corner is displayed top-right
  assert rgb[3, 36, 0] > 200 and rgb[3, 36, 2] < 60
  assert rgb[3, 3, 2] > 200 and rgb[3, 3, 0] < 60


@pytest.mark.parametrize("fmt,ext", [("WEBP", "webp"), ("BMP", "bmp")])
def test_open_webp_bmp(tmp_path, fmt, ext):
  arr = colourful(12, 20, seed=3)
  kw = {"lossless": True} if fmt == "WEBP" else {}
  rgb, alpha = open_image(save(arr, tmp_path / f"x.{ext}", format=fmt, **kw))
  assert alpha is None
  np.testing.assert_array_equal(rgb, arr)


def test_bad_images_name_the_file(tmp_path):
  for path in bad_files(tmp_path) + [str(tmp_path / "missing.jpg")]:
    with pytest.raises(BadImageError) as e:
      open_image(path)
    assert os.path.basename(path) in str(e.value), str(e.value)


# ---------------------------------------------------------------- is_grayscale


def test_is_grayscale_jpeg_noise(tmp_path):
  # a scanned gray print: gray gradient plus mild low-frequency per-channel (chroma) noise
  noise = np.kron(np.random.default_rng(7).normal(0, 2, (30, 40, 3)), np.ones((4, 4, 1)))
  g = np.clip(gray_photo(120, 160, seed=1)[..., None] + noise, 0, 255).astype(np.uint8)
  rgb, _ = open_image(save(g, tmp_path / "g.jpg", quality=75))
  assert (rgb[..., 0] != rgb[..., 2]).mean() > 0.2   # the channels really do differ
  assert is_grayscale(rgb)


def test_is_grayscale_false_for_colour():
  assert not is_grayscale(colourful(100, 100))


def test_is_grayscale_false_for_small_coloured_region():
  g = np.repeat(gray_photo(100, 100, seed=2)[..., None], 3, -1)
  g[40:63, 40:63] = (200, 60, 40)  # 529 px = 5.3 %
  assert is_grayscale(np.repeat(gray_photo(100, 100, seed=2)[..., None], 3, -1))
  assert not is_grayscale(g)


# ---------------------------------------------------------------- list_folder / split


def _touch_names(root, names):
  for n in names:
    p = root / n
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(b"")


def test_list_folder_recursive_and_extensions(tmp_path):
  _touch_names(tmp_path, ["a.jpg", "b.JPG", "sub/c.Png", "sub/deep/d.webp", "e.TIFF", "f.bmp",
                          "g.jpeg", "notes.txt", "h.jpg.txt", "sub/i.gif", "noext"])
  (tmp_path / "folder.jpg").mkdir()   # a directory with an image-like name
  got = sources.list_folder(tmp_path)
  rel = sorted(os.path.relpath(p, tmp_path) for p in got)
  assert rel == sorted(["a.jpg", "b.JPG", os.path.join("sub", "c.Png"),
                        os.path.join("sub", "deep", "d.webp"), "e.TIFF", "f.bmp", "g.jpeg"])


def test_list_folder_names_what_it_cannot_list_and_keeps_rglobs_order(tmp_path, monkeypatch):
  from test_colorize_cli import unlistable
  _touch_names(tmp_path, ["b/x.jpg", "a.jpg", "b.jpg", "b/locked/y.jpg", "a/z.png", "B.png"])
  (tmp_path / "loop.jpg").symlink_to(tmp_path / "loop.jpg")
  (tmp_path / "linked").symlink_to(tmp_path / "b")  # a second way to b: b's photos are listed once
  (tmp_path / "b" / "up").symlink_to(tmp_path)  # a loop
  expected = [str(p) for p in sorted(tmp_path.rglob("*")) if p.is_file()]  # rglob enters no linked folder
  assert sources.list_folder(tmp_path) == expected
  unlistable(monkeypatch, "locked")
  with mock.patch.object(sources.logging, "warning") as warning:
    got = sources.list_folder(tmp_path)
  assert got == [f for f in expected if "locked" not in f]
  said = sorted(call.args[1] for call in warning.call_args_list)
  assert said == [f"{tmp_path / 'b' / 'locked'}: cannot list this folder (Permission denied)",
                  f"{tmp_path / 'b' / 'up'}: a link to {tmp_path}, which is listed under its own path: not listed again",
                  f"{tmp_path / 'linked'}: a link to {tmp_path / 'b'}, which is listed under its own path: not listed again",
                  f"{tmp_path / 'loop.jpg'}: a symbolic link that leads nowhere (broken, or a loop)"]


def test_a_link_to_a_folder_of_the_tree_does_not_move_its_photos_between_the_splits(tmp_path):
  """A link in an earlier folder (b/) to a later sibling (z/) was walked first, and z's photos were
  listed as b/link/...: hashed by those paths, 10 of 30 moved into the eval split and 6 out."""
  _touch_names(tmp_path, [f"z/p{i}.jpg" for i in range(30)] + ["b/.keep"])
  before = {split: sources.list_folder(tmp_path, split, 0.3) for split in ("train", "eval")}
  (tmp_path / "b" / "link").symlink_to(tmp_path / "z")
  assert {split: sources.list_folder(tmp_path, split, 0.3) for split in ("train", "eval")} == before


def test_a_folder_of_links_to_photo_folders_is_listed_through_them(tmp_path):
  """Found 2026-12-02: linked folders were not entered, so a folder holding only links to the
  photos had 'no image files' and links among photos were left out without a word."""
  _touch_names(tmp_path, ["real/a.jpg", "real/sub/b.png"])
  (tmp_path / "data").mkdir()
  (tmp_path / "data" / "photos").symlink_to(tmp_path / "real")
  assert sources.list_folder(tmp_path / "data") == [str(tmp_path / "data" / "photos" / "a.jpg"),
                                                    str(tmp_path / "data" / "photos" / "sub" / "b.png")]



@pytest.mark.parametrize("separate_eval", [False, True])
def test_training_names_a_folder_it_cannot_list_once(tmp_path, monkeypatch, separate_eval):
  from test_colorize_cli import unlistable
  from test_train import tiny_config, write_photos
  from colorjax import train
  write_photos(str(tmp_path / "photos"))
  write_photos(str(tmp_path / "photos" / "locked"), n=2)
  config = tiny_config(tmp_path / "photos")
  if separate_eval:
    config.data.eval = f"folder:{write_photos(str(tmp_path / 'held_out'), n=2)}"
  unlistable(monkeypatch, "locked")
  with mock.patch.object(sources.logging, "warning") as warning:
    train.resolve_data(config)
  said = [call.args[1] for call in warning.call_args_list if call.args[0] == "left out: %s"]
  assert said == [f"{tmp_path / 'photos' / 'locked'}: cannot list this folder (Permission denied)"]

def test_list_folder_split(tmp_path):
  names = [f"d{i % 7}/photo_{i:04d}.{'jpg' if i % 3 else 'PNG'}" for i in range(400)]
  _touch_names(tmp_path, names)
  all_ = sources.list_folder(tmp_path, "all", 0.2)
  train = sources.list_folder(tmp_path, "train", 0.2)
  ev = sources.list_folder(tmp_path, "eval", 0.2)
  assert len(all_) == 400
  assert not set(train) & set(ev)
  assert set(train) | set(ev) == set(all_)
  # The documented rule, written out: md5 of the relative path (with /), its first 32 bits < fraction.
  held_out = lambda name: int(hashlib.md5(name.encode()).hexdigest()[:8], 16) < 0.2 * 2 ** 32
  assert [os.path.relpath(p, tmp_path) for p in ev] == sorted(n for n in names if held_out(n))
  assert 50 <= len(ev) <= 110, len(ev)   # 80 expected, sd ~8
  assert sources.list_folder(tmp_path, "eval", 0.2) == ev   # deterministic
  # The same photos in another folder (moved, or mounted elsewhere) split the same way.
  moved = tmp_path.parent / f"{tmp_path.name}_moved"
  shutil.copytree(tmp_path, moved)
  assert [os.path.relpath(p, moved) for p in sources.list_folder(moved, "eval", 0.2)] == [
      os.path.relpath(p, tmp_path) for p in ev]
  with pytest.raises(ValueError):
    sources.list_folder(tmp_path, "test", 0.2)

  # adding photos never moves old ones between splits
  _touch_names(tmp_path, [f"new/extra_{i}.jpg" for i in range(100)] + ["d0/zzz.jpg"])
  train2 = set(sources.list_folder(tmp_path, "train", 0.2))
  ev2 = set(sources.list_folder(tmp_path, "eval", 0.2))
  assert set(train) <= train2 and set(ev) <= ev2
  assert len(train2) + len(ev2) == 501 and not train2 & ev2


# ---------------------------------------------------------------- scan / resolve


def test_scan_and_resolve_counts(tmp_path):
  good = [save(colourful(50, 70, seed=i), tmp_path / f"col_{i}.jpg", quality=90) for i in range(3)]
  (tmp_path / "sub").mkdir()
  gray = [save(gray_photo(40, 60, seed=5), tmp_path / "sub" / "gray_l.png"),
          save(np.repeat(gray_photo(60, 40, seed=6)[..., None], 3, -1), tmp_path / "gray_rgb.jpg",
               quality=75)]
  bad = bad_files(tmp_path)

  report = sources.scan(sources.list_folder(tmp_path))
  assert sorted(report.files) == sorted(good)
  assert sorted(report.grayscale) == sorted(gray)
  assert sorted(report.unreadable) == sorted(bad)
  for path, reason in report.unreadable.items():
    assert os.path.basename(path) in reason
  assert report.summary() == "3 colour photos, 2 grayscale left out, 3 unreadable skipped"

  rep = sources.resolve(f"folder:{tmp_path}", "all", 0.1)
  assert sorted(rep.files) == sorted(good)
  assert len(rep.grayscale) == 2 and len(rep.unreadable) == 3


def test_resolve_errors(tmp_path):
  only_bad = tmp_path / "bad"
  only_bad.mkdir()
  bad_files(only_bad)
  save(gray_photo(30, 30), only_bad / "g.png")
  with pytest.raises(ValueError, match="no usable colour photos"):
    sources.resolve(f"folder:{only_bad}", "all", 0.1)
  empty = tmp_path / "empty"
  empty.mkdir()
  (empty / "readme.txt").write_text("hi")
  with pytest.raises(ValueError, match="no image files"):
    sources.resolve(f"folder:{empty}", "all", 0.1)
  with pytest.raises(ValueError, match="unknown data source 'foo:bar'"):
    sources.resolve("foo:bar", "train", 0.1)
  with pytest.raises(ValueError, match="data source 'folder:' names no folder: expected 'folder:PATH'"):
    sources.resolve("folder:", "train", 0.1)
  with pytest.raises(ValueError, match=f"unknown data source '{empty}': .*; for the photos in that folder, give folder:{empty}$"):
    sources.resolve(str(empty), "train", 0.1)
  with pytest.raises(FileNotFoundError):
    sources.resolve(f"folder:{tmp_path / 'nope'}", "train", 0.1)


# ---------------------------------------------------------------- pipeline


def _take(ds, n):
  it = iter(ds)
  return [np.asarray(next(it)) for _ in range(n)]


def test_train_dataset_shapes_determinism_and_late_corruption(tmp_path, caplog):
  sizes = [(40, 90), (300, 200), (64, 64), (50, 50)]
  for i, (h, w) in enumerate(sizes):
    save(colourful(h, w, seed=i), tmp_path / f"p{i}.png")
  doomed = save(colourful(60, 60, seed=9), tmp_path / "doomed.jpg")
  files = sources.resolve(f"folder:{tmp_path}", "all", 0.1).files
  assert doomed in files
  (tmp_path / "doomed.jpg").write_bytes(b"garbage" * 100)   # changed after the scan

  S, B = 32, 2
  with caplog.at_level(logging.WARNING):
    batches = _take(pipeline.train_dataset(files, S, B, seed=0, num_workers=0,
                                           shard_index=0, shard_count=1), 12)  # ~5 epochs
  for b in batches:
    assert b.dtype == np.uint8 and b.shape == (B, S, S, 3)
  assert any("doomed.jpg" in r.getMessage() for r in caplog.records)

  again = _take(pipeline.train_dataset(files, S, B, seed=0, shard_index=0, shard_count=1), 3)
  for a, b in zip(batches[:3], again):
    np.testing.assert_array_equal(a, b)
  other = _take(pipeline.train_dataset(files, S, B, seed=1, shard_index=0, shard_count=1), 3)
  assert any(not np.array_equal(a, b) for a, b in zip(batches[:3], other))

  for f in files:  # every photo gone after the scan (an unmounted drive): an error, not a hang
    os.remove(f)
  with pytest.raises(ValueError, match="skipped 100.00 %"):
    _take(pipeline.train_dataset(files, S, B, seed=0, shard_index=0, shard_count=1), 1)


def test_train_dataset_shards_disjoint_and_complete(tmp_path):
  n, S = 20, 8
  files = []
  for i in range(n):
    files.append(save(np.full((S, S, 3), (i * 10, 100, 200), np.uint8), tmp_path / f"f{i:02d}.png"))
  seen = []
  for shard in range(2):
    # batch 2, 5 batches = one epoch of this shard's 10 files
    batches = _take(pipeline.train_dataset(files, S, 2, seed=3, shard_index=shard, shard_count=2), 5)
    crops = np.concatenate(batches)
    assert (crops == crops[:, :1, :1]).all()       # uniform crops: colour = file
    ids = [int(c[0, 0, 0]) // 10 for c in crops]
    assert len(set(ids)) == 10, ids                # one epoch: each file once
    seen.append(set(ids))
  assert not seen[0] & seen[1]
  assert seen[0] | seen[1] == set(range(n))


def test_zoom_reaches_photos_no_larger_than_the_crop(tmp_path):
  """A photo of exactly the crop size (shards are prepared at a 256 px short side) still zooms:
  a ramp across it spans 1/z of its range in a crop zoomed z times."""
  S = 32
  ramp = np.repeat(np.linspace(0, 255, S)[None, :, None], S, 0) * np.ones((1, 1, 3))
  ramp[..., 1] = 128  # colourful
  files = [save(ramp.astype(np.uint8), tmp_path / "ramp.png")]
  span = lambda crops: crops[:, S // 2, :, 0].astype(int).max(1) - crops[:, S // 2, :, 0].astype(int).min(1)
  zoom1 = np.concatenate(_take(pipeline.train_dataset(files, S, 4, seed=0, shard_index=0, shard_count=1), 5))
  assert (span(zoom1) == 255).all()
  zoomed = np.concatenate(_take(pipeline.train_dataset(files, S, 4, seed=0, shard_index=0, shard_count=1,
                                                       max_zoom=3.0), 10))
  assert span(zoomed).min() < 255 / 2 and span(zoomed).min() > 255 / 3 - 12 and span(zoomed).max() > 200


def test_each_process_draws_its_own_augmentation(tmp_path):
  """Two processes' shares of the same photos, same seed: different crops, zooms and flips."""
  for i in range(8):
    save(colourful(96, 96, seed=0), tmp_path / f"same_{i}.png")  # one photo eight times
  files = sources.resolve(f"folder:{tmp_path}", "all", 0.1).files
  first = [_take(pipeline.train_dataset(files, 32, 4, seed=0, shard_index=k, shard_count=2, max_zoom=2.0), 1)[0]
           for k in range(2)]
  assert not any(np.array_equal(a, b) for a, b in zip(*first))


def test_eval_images_center_crops_and_skips_bad(tmp_path):
  S = 32
  arr = np.zeros((64, 32, 3), np.uint8)
  arr[..., 0] = (np.arange(64) * 4)[:, None]    # row index in red
  arr[..., 2] = 77
  tall = save(arr, tmp_path / "tall.png")
  big = save(colourful(90, 150, seed=4), tmp_path / "big.png")
  files = [bad_files(tmp_path)[0], tall, str(tmp_path / "missing.png"), big, bad_files(tmp_path)[1]]
  out = pipeline.eval_images(files, S, max_images=10)
  assert out.dtype == np.uint8 and out.shape == (2, S, S, 3)
  np.testing.assert_array_equal(out[0], arr[16:48])   # no resize needed: rows 16..47
  assert pipeline.eval_images(files, S, max_images=1).shape == (1, S, S, 3)


def test_a_banner_is_cut_to_a_window_before_it_is_resized(tmp_path):
  """A 2x3000 strip resized whole to a 64 px short side would be 96000 px long (gigabytes at 256)."""
  strip = np.zeros((2, 3000, 3), np.uint8)
  strip[..., 0] = (np.arange(3000) // 12)[None, :]  # its column in red, /12
  strip[..., 2] = 200
  path = save(strip, tmp_path / "banner.png")
  rgb = images.within_aspect(strip)
  np.testing.assert_array_equal(rgb, strip[:, 1496:1504])  # the middle 4:1 window (images.MAX_ASPECT)
  assert images.within_aspect(strip.transpose(1, 0, 2)).shape == (8, 2, 3)
  photo = np.zeros((120, 411, 3), np.uint8)  # the longest of the shared photos (3.4:1) is kept whole
  assert images.within_aspect(photo, np.random.default_rng(0)) is photo
  assert set(np.unique(pipeline.load_eval_crop(path, 64)[..., 0])) <= {124, 125}  # columns 1496-1503
  reds = {int(pipeline.load_train_crop(path, np.random.default_rng(seed), 64)[0, 32, 0]) for seed in range(20)}
  assert len(reds) > 5 and max(reds) - min(reds) > 100  # random windows along the whole strip


def test_eval_images_draw_from_every_source_not_the_first(tmp_path):
  # Two sources joined: ten reddish photos, then ten bluish ones. Half of them come from both.
  red = [save(np.full((8, 8, 3), (200, 40, 40), np.uint8), tmp_path / f"a{i}.png") for i in range(10)]
  blue = [save(np.full((8, 8, 3), (40, 40, 200), np.uint8), tmp_path / f"b{i}.png") for i in range(10)]
  out = pipeline.eval_images(red + blue, 8, max_images=10)
  reds = int(np.sum(out[:, 0, 0, 0] == 200))
  assert 2 <= reds <= 8 and np.all(np.diff(out[:, 0, 0, 2].astype(int)) >= 0)  # both sources, in file order
  np.testing.assert_array_equal(out, pipeline.eval_images(red + blue, 8, max_images=10))  # the same each time


def test_a_split_left_empty_by_eval_fraction_says_so_with_the_callers_hint(tmp_path):
  _touch_names(tmp_path, ["a.jpg", "b.jpg"])
  with pytest.raises(ValueError, match="split 'eval': eval_fraction 0.001 puts every photo in the other split$"):
    sources.resolve(f"folder:{tmp_path}", "eval", 0.001)
  with pytest.raises(ValueError, match="puts every photo in the other split \\(raise --eval_fraction\\)$"):
    sources.resolve(f"folder:{tmp_path}", "eval", 0.001, hint="raise --eval_fraction")


@pytest.mark.parametrize("source, error, message", [
    ("folder:{tmp}/nope", FileNotFoundError, "image folder '{tmp}/nope' does not exist"),
    ("{tmp}", ValueError, "unknown data source '{tmp}': .*; for the photos in that folder, give folder:{tmp}"),
    ("tfds:", ValueError, "data source 'tfds:' names no dataset"),
    ("folder:{tmp}", ValueError, "data source 'folder:{tmp}' has no image files \\("),
])
def test_a_source_error_starts_with_the_setting_it_was_given_in(tmp_path, source, error, message):
  """The message names the value; the setting says where to change it (a config field, a flag)."""
  with pytest.raises(error, match=f"^--data: {message.format(tmp=tmp_path)}") as raised:
    sources.resolve(source.format(tmp=tmp_path), "all", 0.1, setting="--data")
  assert type(raised.value) is error  # callers that catch FileNotFoundError still do
  with pytest.raises(error, match=f"^{message.format(tmp=tmp_path)}"):  # a library call without one: as it was
    sources.resolve(source.format(tmp=tmp_path), "all", 0.1)


def test_a_folder_source_that_is_a_file_says_so(tmp_path):
  (tmp_path / "photo.jpg").write_bytes(b"")
  with pytest.raises(FileNotFoundError, match="photo.jpg' is a file, not a folder"):
    sources.list_folder(tmp_path / "photo.jpg")


def test_every_command_reads_photos_up_to_colorizes_limit(tmp_path):
  """A 90-MP photo (over PIL's own 89.5 MP): training, prepare and evaluate left it out as
  unreadable while colorize read it, and in one process the answer depended on whether colorize's
  check had run first. Read in a new process, where nothing has touched PIL's limit."""
  Image.new("L", (10_000, 9_000), 128).save(tmp_path / "big.png")
  read = ("import sys; from colorjax.data import images\n"
          "rgb, _ = images.open_image(sys.argv[1])\nprint(rgb.shape)")
  run = subprocess.run([sys.executable, "-c", read, str(tmp_path / "big.png")], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(__file__)))})
  assert run.stdout.strip() == "(9000, 10000, 3)", run.stderr[-2000:]
