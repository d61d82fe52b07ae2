"""Colorize anything: every input kind, any size in bounded memory, batches, and the command line."""

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tracemalloc
from unittest import mock

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from PIL import Image

from colorjax import color, colorize
from colorjax import config as config_lib
from colorjax import train
from colorjax.data.images import BadImageError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PHOTOS = os.path.join(REPO, "colorjax", "assets", "photos")
# Compiling with XLA's optimisations off makes the tiny models' start-up several times faster.
FAST_ENV = {**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu", "JAX_DISABLE_MOST_OPTIMIZATIONS": "1"}


@contextlib.contextmanager
def xla_optimizations_off():
  """Tiny test models compile ~15x faster (28 s -> 1.9 s for one init); restored after (global flag)."""
  before = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", True)
  try:
    yield
  finally:
    jax.config.update("jax_disable_most_optimizations", before)


@pytest.fixture(scope="module", autouse=True)
def fast_compiles():
  with xla_optimizations_off():
    yield


def make_workdir(path, best: bool = False, **fields) -> str:
  """A workdir as training leaves it (config.json, checkpoint 0, optionally best/ at step 5), untrained."""
  c = config_lib.default_config()
  c.update(fields)
  c.image_size = 32
  c.model.generator, c.model.num_downs, c.model.ngf, c.model.ndf = "pix2pix_unet", 5, 8, 8
  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, "config.json"), "w") as f:
    f.write(c.to_json())
  with xla_optimizations_off():
    state = train.Trainer(c).init_state()
  with ocp.CheckpointManager(os.path.join(path, "checkpoints")) as mgr:
    mgr.save(0, args=ocp.args.Composite(state=ocp.args.StandardSave(state)))
  if best:
    with ocp.CheckpointManager(os.path.join(path, "best")) as mgr:
      mgr.save(5, args=ocp.args.StandardSave(state))
  return str(path)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  return make_workdir(tmp_path_factory.mktemp("workdir"), best=True)


@pytest.fixture(scope="module")
def colorizer(workdir):
  return colorize.Colorizer.from_workdir(workdir)


def photo(name="chelsea.jpg"):
  return np.asarray(Image.open(os.path.join(PHOTOS, name)))


def test_import_colorjax_is_cheap_and_exports_colorizer():
  code = ("import sys, colorjax; assert 'jax' not in sys.modules, 'import colorjax loaded jax'; "
          "from colorjax.colorize import Colorizer; assert colorjax.Colorizer is Colorizer; print('OK')")
  out = subprocess.run([sys.executable, "-c", code], env=FAST_ENV, capture_output=True, text=True)
  assert out.stdout.strip() == "OK", out.stderr[-2000:]


def test_every_array_kind_keeps_its_size_and_alpha(colorizer):
  rgb = photo()
  gray = np.asarray(Image.fromarray(rgb).convert("L"))
  rgba = np.dstack([rgb, np.full(rgb.shape[:2], 77, np.uint8)])
  for image in (rgb, gray, rgba, gray.astype(np.uint16) * 257, rgb / 255.0, gray > 128,
                np.zeros((1, 1), np.uint8), np.full((3, 2000, 3), 200, np.uint8)):
    out = colorizer(image)
    assert out.dtype == np.uint8 and out.shape[:2] == image.shape[:2], image.shape
    assert out.shape[2] == (4 if image is rgba else 3)
  np.testing.assert_array_equal(colorizer(rgba)[..., 3], 77)
  # A panorama strip is rendered with a capped long side, not a 2000-px-tall network input.
  assert colorizer.render_shape(3, 2000) == (32, 128)


@pytest.mark.parametrize("array, problem", [(np.zeros((0, 5), np.uint8), "got shape \\(0, 5\\)"),
                                            (np.zeros((1, 4, 4, 3), np.uint8), "one image; for several, call colorize_batch"),
                                            ([np.zeros((4, 4), np.uint8)] * 2, "one image; for several"),
                                            (np.zeros((4, 4, 5), np.uint8), "got shape \\(4, 4, 5\\)"),
                                            (np.zeros((4, 4), np.int64), "dtype int64 is not uint8"),
                                            (np.full((4, 4), 200.0), "spans \\[200, 200\\].*divide by 255"),
                                            (np.full((4, 4), np.nan), "NaN or infinite")])
def test_an_array_that_is_not_an_image_is_refused_with_its_shape(colorizer, array, problem):
  with pytest.raises(ValueError, match=problem):
    colorizer(array)


def test_a_negative_render_size_or_an_empty_batch_is_refused(workdir):
  with pytest.raises(ValueError, match="render size must be positive .*, got -5"):
    colorize.Colorizer.from_workdir(workdir, render_size=-5)
  with pytest.raises(ValueError, match="batch size must be at least 1, got 0"):
    colorize.Colorizer.from_workdir(workdir, batch_size=0)


def test_pil_images_of_any_mode_colorize_as_the_colours_they_show(colorizer):
  image = Image.fromarray(photo()[:40, :56])
  rgba = image.convert("RGBA")
  rgba.putalpha(Image.new("L", image.size, 77))
  gray16 = Image.fromarray(np.asarray(image.convert("L")).astype(np.uint16) * 257)
  for pil, shown in ((image, image), (image.quantize(16), image.quantize(16).convert("RGB")),
                     (image.convert("CMYK"), image.convert("CMYK").convert("RGB")), (rgba, rgba),
                     (image.convert("LA"), image.convert("LA")), (gray16, image.convert("L"))):
    out, expected = colorizer(pil), colorizer(np.asarray(shown))
    assert out.shape == expected.shape, pil.mode
    assert np.abs(out.astype(int) - expected).max() <= 1, pil.mode  # a palette is not read as gray levels
  np.testing.assert_array_equal(colorizer(rgba)[..., 3], 77)


def test_each_render_shape_compiles_for_one_photo_and_for_a_batch_only(colorizer):
  image = np.zeros((40, 200), np.uint8)
  colorizer(image)
  one = colorizer._predict._cache_size()
  for n in (3, 2, 5):  # padded to batch_size 8: one compile (powers of two took three)
    assert len(colorizer.colorize_batch([image] * n)) == n
  assert colorizer._predict._cache_size() <= one + 1


def test_colour_input_is_reduced_to_its_lightness(colorizer):
  rgb = photo()
  l, ab = color.rgb_uint8_to_model(rgb, np)
  gray = color.to_uint8(color.model_to_rgb(l, np.zeros_like(ab), np), np)  # same L, no colour
  out, out_from_gray = colorizer(rgb), colorizer(gray)
  # The photo's own colour never reaches the model: same L in, same colours out.
  assert np.abs(out.astype(int) - out_from_gray).max() <= 2
  np.testing.assert_allclose(color.rgb_uint8_to_model(out, np)[0], l, atol=0.03)


def test_bands_and_batches_give_the_same_pixels_as_one_piece(colorizer, monkeypatch):
  images = [photo("chelsea.jpg"), photo("coffee.jpg"), photo("astronaut.jpg")[:300, :451]]
  batched = colorizer.colorize_batch(images)
  singles = [colorizer(x) for x in images]
  monkeypatch.setattr(colorize, "_BAND_PIXELS", 10 ** 9)
  whole = [colorizer(x) for x in images]
  for b, s, w in zip(batched, singles, whole):
    assert np.abs(b.astype(int) - s).max() <= 1
    assert np.abs(s.astype(int) - w).max() <= 1


def test_a_big_photo_needs_memory_for_its_pixels_not_for_float_copies(colorizer):
  big = np.asarray(Image.fromarray(photo()).resize((4000, 3000)))  # 12 MP
  tracemalloc.start()
  out = colorizer(big)
  peak = tracemalloc.get_traced_memory()[1]
  tracemalloc.stop()
  assert out.shape == big.shape
  # Output (3 B/px) and float32 L (4 B/px) plus a band's temporaries (measured: 9.3 B/px);
  # the whole photo in float32 Lab with its temporaries would be > 50 B/px.
  assert peak / big[..., 0].size < 12, peak / big[..., 0].size


def test_pixel_limit_and_pil_bomb_guard_give_one_clear_error(tmp_path, monkeypatch):
  path = str(tmp_path / "wide.png")
  Image.new("L", (300, 200)).save(path)
  assert colorize.probe(path, max_pixels=60_000) == (200, 300)
  with pytest.raises(colorize.TooManyPixelsError, match="300x200 = 60,000 is over the limit of 59,999"):
    colorize.probe(path, max_pixels=59_999)
  monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL refuses before our check can run
  with pytest.raises(colorize.TooManyPixelsError, match="far over the limit"):
    colorize.probe(path, max_pixels=100)


def test_files_that_cannot_be_read_say_why(tmp_path):
  (tmp_path / "empty.jpg").write_bytes(b"")
  (tmp_path / "notes.jpg").write_text("a text file")
  with open(tmp_path / "float.tif", "wb") as f:  # little-endian TIFF header, then nothing PIL knows
    f.write(b"II*\0" + bytes(4))
  for name, why in (("empty.jpg", "the file is empty"), ("notes.jpg", "not a JPEG, PNG, WebP, BMP or TIFF image"),
                    ("float.tif", "a TIFF of a kind that cannot be read")):
    with pytest.raises(BadImageError, match=f"{name}: {why}"):
      colorize.probe(str(tmp_path / name))


def test_exif_rotation_is_seen_before_decoding(tmp_path):
  exif = Image.Exif()
  exif[0x0112] = 6  # rotate 90 degrees on display
  path = str(tmp_path / "portrait.jpg")
  Image.fromarray(photo()).save(path, exif=exif)
  h, w = photo().shape[:2]
  assert colorize.probe(path) == (w, h)
  assert colorize.read_image(path)[0].shape[:2] == (w, h)


def test_the_colorized_png_keeps_the_photos_exif_and_resolution_but_not_its_rotation(colorizer, tmp_path):
  exif = Image.Exif()
  exif[0x0112] = 6                                     # rotate 90 degrees on display
  exif[0x010E] = "Rosa and Anton, Vienna 1931"         # ImageDescription
  exif.get_ifd(0x8769)[0x9003] = "1931:06:01 11:59:00"  # DateTimeOriginal, in the Exif sub-IFD
  (tmp_path / "in").mkdir()
  Image.fromarray(photo()).convert("L").save(tmp_path / "in" / "scan.jpg", exif=exif, dpi=(600, 600))
  Image.fromarray(photo()).save(tmp_path / "in" / "bare.png")
  gray16 = (np.asarray(Image.fromarray(photo()).convert("L"), np.uint16) * 257)
  Image.fromarray(gray16).save(tmp_path / "in" / "scan16.tif", description="box 3, print 12", dpi=(1200, 1200))
  assert colorize.colorize_files(colorizer, [str(tmp_path / "in")], str(tmp_path / "out")) == 0
  with Image.open(tmp_path / "out" / "scan.png") as out:
    kept, dpi = out.getexif(), out.info["dpi"]
    assert out.size == photo().shape[:2]  # turned once, by the pixels
  assert kept[0x010E] == "Rosa and Anton, Vienna 1931" and 0x0112 not in kept
  assert kept.get_ifd(0x8769)[0x9003] == "1931:06:01 11:59:00"
  assert dpi == pytest.approx((600, 600), abs=0.01)  # PNG keeps pixels per metre
  with Image.open(tmp_path / "out" / "bare.png") as out:
    assert not out.getexif() and "dpi" not in out.info
  with Image.open(tmp_path / "out" / "scan16.png") as out:  # not the TIFF's 16 bits per sample, strips, size
    assert dict(out.getexif()) == {0x010E: "box 3, print 12"}
    assert out.info["dpi"] == pytest.approx((1200, 1200), abs=0.01)


def test_exif_of_only_a_date_taken_and_a_location_is_kept(tmp_path):
  exif = Image.Exif()
  exif.get_ifd(0x8769)[0x9003] = "2001:01:01 00:00:00"  # DateTimeOriginal
  exif.get_ifd(0x8825)[2] = (48.0, 12.0, 30.0)          # GPSLatitude
  Image.new("L", (8, 8)).save(tmp_path / "a.jpg", exif=exif)
  Image.new("RGB", (8, 8)).save(tmp_path / "a.png", **colorize.photo_metadata(tmp_path / "a.jpg"))
  with Image.open(tmp_path / "a.png") as out:
    kept = out.getexif()
    assert kept.get_ifd(0x8769) == {0x9003: "2001:01:01 00:00:00"} and kept.get_ifd(0x8825) == {2: (48.0, 12.0, 30.0)}


def test_a_jpeg_that_declares_no_resolution_gets_none_not_pillows_72_dpi(tmp_path):
  described = Image.Exif()
  described[0x010E] = "no resolution in here"
  with_resolution = Image.Exif()
  with_resolution.update({0x011A: 300.0, 0x011B: 300.0, 0x0128: 2})  # X/YResolution, in inches
  Image.new("L", (8, 8)).save(tmp_path / "exif_only.jpg", exif=described)
  Image.new("L", (8, 8)).save(tmp_path / "exif_dpi.jpg", exif=with_resolution)  # JFIF: aspect ratio only
  Image.new("L", (8, 8)).save(tmp_path / "jfif_dpi.jpg", dpi=(150, 150))
  with Image.open(tmp_path / "exif_only.jpg") as img:
    assert img.info["dpi"] == (72, 72) and img.info["jfif_unit"] == 0  # what Pillow makes of it
  assert "dpi" not in colorize.photo_metadata(tmp_path / "exif_only.jpg")
  assert colorize.photo_metadata(tmp_path / "exif_dpi.jpg")["dpi"] == pytest.approx((300, 300))
  assert colorize.photo_metadata(tmp_path / "jfif_dpi.jpg")["dpi"] == pytest.approx((150, 150))


def test_a_tiff_that_declares_no_resolution_gets_none_not_pillows_1_dpi(tmp_path):
  Image.new("L", (8, 8)).save(tmp_path / "none.tif")
  Image.new("L", (8, 8)).save(tmp_path / "dpi.tif", dpi=(300, 300))
  with Image.open(tmp_path / "none.tif") as img:
    assert img.info["dpi"] == (1, 1) and 0x011A not in img.tag_v2  # what Pillow makes of it
  assert "dpi" not in colorize.photo_metadata(tmp_path / "none.tif")
  assert colorize.photo_metadata(tmp_path / "dpi.tif")["dpi"] == pytest.approx((300, 300))


def test_exif_that_cannot_be_carried_over_leaves_the_png_without_it(colorizer, tmp_path, monkeypatch):
  import struct
  exif = Image.Exif()
  exif[0x010E] = "a tag Pillow will fail to write"
  (tmp_path / "in").mkdir()
  Image.fromarray(photo()).save(tmp_path / "in" / "a.jpg", exif=exif)
  def fails(self, *args):
    raise struct.error("as Pillow's writer does on a malformed value")
  monkeypatch.setattr(Image.Exif, "tobytes", fails)
  assert colorize.colorize_files(colorizer, [str(tmp_path / "in")], str(tmp_path / "out")) == 0
  monkeypatch.undo()
  with Image.open(tmp_path / "out" / "a.png") as out:
    assert not out.getexif() and out.size == photo().shape[1::-1]


def test_a_quarter_turned_photo_keeps_its_print_size(colorizer, tmp_path):
  """A fax-like scan at 200 x 100 dpi, stored on its side (orientation 6 or 8): the PNG, upright,
  is 100 x 200 dpi, so it prints at the photo's size, not stretched."""
  (tmp_path / "in").mkdir()
  for orientation in (1, 6, 8):
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(photo()).convert("L").save(tmp_path / "in" / f"o{orientation}.jpg", exif=exif, dpi=(200, 100))
  assert colorize.colorize_files(colorizer, [str(tmp_path / "in")], str(tmp_path / "out")) == 0
  h, w = photo().shape[:2]
  for orientation, size, dpi in ((1, (w, h), (200, 100)), (6, (h, w), (100, 200)), (8, (h, w), (100, 200))):
    with Image.open(tmp_path / "out" / f"o{orientation}.png") as out:
      assert out.size == size and out.info["dpi"] == pytest.approx(dpi, abs=0.01), orientation


def test_a_resolution_png_cannot_hold_is_left_out_and_the_photo_colorized(colorizer, tmp_path):
  from PIL import TiffImagePlugin
  (tmp_path / "in").mkdir()
  gray = Image.fromarray(photo()).convert("L")
  unset = {282: TiffImagePlugin.IFDRational(0, 0), 283: TiffImagePlugin.IFDRational(0, 0), 296: 2}  # 0/0: NaN dpi
  gray.save(tmp_path / "in" / "unset.tif", description="box 3", tiffinfo=unset)
  gray.save(tmp_path / "in" / "absurd.tif", dpi=(3e9, 3e9))  # over PNG's 32-bit pixels per metre
  assert colorize.colorize_files(colorizer, [str(tmp_path / "in")], str(tmp_path / "out")) == 0
  for name in ("unset", "absurd"):
    with Image.open(tmp_path / "out" / f"{name}.png") as out:
      assert "dpi" not in out.info and out.size == photo().shape[1::-1]
  with Image.open(tmp_path / "out" / "unset.png") as out:
    assert dict(out.getexif()) == {0x010E: "box 3"}  # the description is kept all the same


def test_metadata_the_png_writer_refuses_leaves_the_png_without_it(colorizer, tmp_path, monkeypatch):
  (tmp_path / "in").mkdir()
  for name in ("a.jpg", "b.jpg"):
    Image.fromarray(photo()).save(tmp_path / "in" / name)
  monkeypatch.setattr(colorize, "photo_metadata", lambda photo, name=None: {"dpi": (1e12, 1e12)})  # past 32 bits
  assert colorize.colorize_files(colorizer, [str(tmp_path / "in")], str(tmp_path / "out")) == 0
  for name in ("a.png", "b.png"):
    with Image.open(tmp_path / "out" / name) as out:
      assert "dpi" not in out.info and out.size == photo().shape[1::-1]


def test_collect_inputs_keeps_trees_expands_globs_and_never_collides(tmp_path):
  (tmp_path / "album" / "1950s").mkdir(parents=True)
  (tmp_path / "album" / ".thumbs").mkdir()
  for rel in ("album/a.jpg", "album/a.png", "album/1950s/b.tif", "album/.thumbs/x.jpg", "album/notes.txt",
              "album/1950s/Pic.JPG", "album/1950s/pic.tif"):  # one pic.png on a disk that ignores case
    (tmp_path / rel).write_bytes(b"")
  pairs = colorize.collect_inputs([str(tmp_path / "album")])
  assert sorted(rel for _, rel in pairs) == ["1950s/Pic.JPG.png", "1950s/b.png", "1950s/pic.tif.png", "a.jpg.png", "a.png.png"]
  (tmp_path / "album" / "a.jpg.png").write_bytes(b"")  # whose name is a.jpg's output (found 2026-12-02: refused)
  pairs = colorize.collect_inputs([str(tmp_path / "album")])
  assert sorted(rel for _, rel in pairs if rel.startswith("a")) == ["a.jpg.png", "a.jpg.png.png", "a.png.png"]
  (tmp_path / "album" / "a.jpg.png").unlink()
  pairs = colorize.collect_inputs([str(tmp_path / "album" / "**" / "*.tif"), str(tmp_path / "album" / "a.jpg")])
  assert [rel for _, rel in pairs] == ["1950s/b.png", "1950s/pic.png", "a.png"]
  # The folders a glob matches are walked, and its files of other kinds noted, as a folder's are
  # (found 2026-12-02: 'album/19*' matched "nothing", and 'album/*' left 1950s/ out and made notes.txt an error).
  others = []
  pairs = colorize.collect_inputs([str(tmp_path / "album" / "19*")], others=others)
  assert [rel for _, rel in pairs] == ["1950s/Pic.JPG.png", "1950s/b.png", "1950s/pic.tif.png"] and others == []
  pairs = colorize.collect_inputs([str(tmp_path / "album" / "*")], others=others)
  assert sorted(rel for _, rel in pairs) == ["1950s/Pic.JPG.png", "1950s/b.png", "1950s/pic.tif.png", "a.jpg.png", "a.png.png"]
  assert others == [str(tmp_path / "album" / "notes.txt")]
  out = tmp_path / "album" / "colorized"
  out.mkdir()
  (out / "old.png").write_bytes(b"")
  assert all("colorized" not in src for src, _ in colorize.collect_inputs([str(tmp_path / "album")], exclude=str(out)))
  # Two folders with a file of the same name: each goes under its folder's name, nothing is lost.
  for rel in ("scans/a.jpg", "scans/c.jpg", "more/scans/a.jpg"):
    (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / rel).write_bytes(b"")
  pairs = colorize.collect_inputs([str(tmp_path / "album"), str(tmp_path / "scans")], exclude=str(out))
  assert [rel for _, rel in pairs] == ["album/1950s/Pic.JPG.png", "album/1950s/b.png", "album/1950s/pic.tif.png",
                                       "album/a.jpg.png", "album/a.png.png", "scans/a.png", "scans/c.png"]


def test_two_inputs_never_write_the_same_output(colorizer, tmp_path):
  for rel in ("scans/x.jpg", "more/scans/x.jpg", "scans/y.jpg"):
    (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(photo()[:48, :64]).save(tmp_path / rel)
  out = tmp_path / "out"
  failures = colorize.colorize_files(colorizer, [str(tmp_path / "scans"), str(tmp_path / "more" / "scans")], str(out))
  assert failures == 1  # both folders are named scans: the second x.jpg is refused, not written over the first
  assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == ["scans", "scans/x.jpg.png", "scans/y.png"]
  # Written through a temporary file beside it: re-running with --overwrite leaves no stray files.
  assert colorize.colorize_files(colorizer, [str(tmp_path / "scans")], str(out / "scans"), overwrite=True) == 0
  assert sorted(os.listdir(out / "scans")) == ["x.jpg.png", "x.png", "y.png"]
  assert Image.open(out / "scans" / "x.png").size == (64, 48)


def test_best_checkpoint_loads_and_a_missing_one_says_so(workdir, tmp_path):
  assert colorize.Colorizer.from_workdir(workdir, "best").config.image_size == 32
  assert colorize.Colorizer.from_workdir(workdir, 0).step == 0  # a step number from Python
  with pytest.raises(ValueError, match="temperature must be > 0"):
    colorize.Colorizer.from_workdir(workdir, temperature=-1.0)
  bare = make_workdir(tmp_path / "no_best")
  with pytest.raises(FileNotFoundError, match="no best checkpoint"):
    colorize.Colorizer.from_workdir(bare, "best")
  with pytest.raises(ValueError, match="'latest', 'best' or a step number"):
    colorize.Colorizer.from_workdir(bare, "newest")
  with pytest.raises(FileNotFoundError, match=f"workdir '{tmp_path}/runs/dmeo' does not exist"):
    colorize.Colorizer.from_workdir(str(tmp_path / "runs" / "dmeo"))
  with pytest.raises(FileNotFoundError, match="is not a colorjax workdir .no config.json.: train first"):
    colorize.Colorizer.from_workdir(str(tmp_path))


def test_the_run_chooses_the_default_checkpoint(workdir, tmp_path):
  assert colorize.Colorizer.from_workdir(workdir).step == 0  # colorize_checkpoint = "latest"
  demo_like = make_workdir(tmp_path / "demo_like", best=True, colorize_checkpoint="best")
  assert colorize.Colorizer.from_workdir(demo_like).step == 5
  assert colorize.Colorizer.from_workdir(demo_like, "latest").step == 0
  older = json.load(open(os.path.join(workdir, "config.json")))
  del older["colorize_checkpoint"]  # a run trained before the field existed
  (tmp_path / "older").mkdir()
  shutil.copytree(os.path.join(workdir, "checkpoints"), tmp_path / "older" / "checkpoints")
  (tmp_path / "older" / "config.json").write_text(json.dumps(older))
  assert colorize.Colorizer.from_workdir(str(tmp_path / "older")).step == 0
  # Stopped before its first eval, a run whose default is "best" has none yet: the latest, said so.
  (tmp_path / "older" / "config.json").write_text(json.dumps({**older, "colorize_checkpoint": "best"}))
  (tmp_path / "older" / "best").mkdir()  # training makes it empty when it starts
  with mock.patch.object(colorize.logging, "warning") as warning:
    assert colorize.Colorizer.from_workdir(str(tmp_path / "older")).step == 0
  assert "no best checkpoint yet" in warning.call_args.args[0]


def _inputs(root):
  """One file of each kind a user has, plus two broken ones."""
  (root / "album" / "1950s").mkdir(parents=True)
  rgb = photo()
  Image.fromarray(rgb).convert("L").save(root / "album" / "gray.jpg")
  Image.fromarray(rgb).save(root / "album" / "colour.webp")
  Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 99, np.uint8)])).save(root / "album" / "alpha.png")
  Image.fromarray(rgb).save(root / "album" / "1950s" / "scan.bmp")
  Image.fromarray((np.asarray(Image.fromarray(rgb).convert("L"), np.uint16) * 257)).save(root / "album" / "1950s" / "deep.tif")
  (root / "album" / "1950s" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
  Image.new("L", (400, 400)).save(root / "huge.png")
  Image.new("L", (10, 10)).save(root / "tiny.png")
  return rgb.shape[:2]


def test_command_line_colorizes_a_tree_and_reports_each_failure_in_one_line(workdir, tmp_path):
  size = _inputs(tmp_path)
  out = tmp_path / "out"
  cmd = [sys.executable, "-m", "colorjax.colorize", "--workdir", workdir, "--render-size=64",
         "--max-pixels=150000", str(tmp_path / "album"), str(tmp_path / "*.png"), "--out", str(out)]
  run = subprocess.run(cmd, env=FAST_ENV, capture_output=True, text=True, timeout=300)
  assert run.returncode == 1, run.stderr[-3000:]
  errors = [l for l in run.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 2, run.stderr[-3000:]
  assert "broken.jpg: unreadable image" in errors[0] + errors[1]
  assert "huge.png: too many pixels" in errors[0] + errors[1] and "--max-pixels=160000" in errors[0] + errors[1]
  assert "2 of 8 inputs failed" in run.stderr
  written = sorted(str(p.relative_to(out)) for p in out.rglob("*.png"))
  assert written == ["1950s/deep.png", "1950s/scan.png", "alpha.png", "colour.png", "gray.png", "tiny.png"]
  for rel in written:
    img = Image.open(out / rel)
    assert img.size == ((10, 10) if rel == "tiny.png" else size[::-1]) and img.mode in ("RGB", "RGBA")
  assert np.all(np.asarray(Image.open(out / "alpha.png"))[..., 3] == 99)

  # --out pointing at the inputs: the PNG input would be overwritten, so it is refused.
  before = (tmp_path / "tiny.png").read_bytes()
  run = subprocess.run([sys.executable, "-m", "colorjax.colorize", "--workdir", workdir,
                        str(tmp_path / "tiny.png"), "--out", str(tmp_path)],
                       env=FAST_ENV, capture_output=True, text=True, timeout=300)
  assert run.returncode == 1 and "would overwrite an input" in run.stderr
  assert (tmp_path / "tiny.png").read_bytes() == before


@pytest.mark.parametrize("args, message", [
    (["--workdir", "run"], "error: give at least one image file, folder or glob pattern to colorize"),
    (["--workdir", "run", "--max-pixels=0", "x.jpg"], "error: --max-pixels must be at least 1, got 0"),
])
def test_a_usage_mistake_is_one_error_line_not_the_help(args, message):
  """absl prints every flag's help above a UsageError's reason; the commands print the reason."""
  run = subprocess.run([sys.executable, "-m", "colorjax.colorize", *args], env=FAST_ENV, capture_output=True, text=True)
  assert run.returncode == 1 and run.stderr.strip().splitlines() == [message], run.stderr[-3000:]


def test_ctrl_c_outside_a_commands_own_handling_is_one_line_and_status_130():
  """It exits without the interpreter's teardown (which crashed after XLA was interrupted) but
  with the atexit functions (an --out folder made and left empty is removed)."""
  code = ("import atexit, sys\nfrom absl import flags\nfrom colorjax import cli\n"
          "def main(argv):\n  atexit.register(print, 'atexit ran', file=sys.stderr)\n  raise KeyboardInterrupt\n"
          "cli.run(main, flags_parser=flags.FLAGS)")
  run = subprocess.run([sys.executable, "-c", code], env=FAST_ENV, capture_output=True, text=True)
  assert run.returncode == 130 and run.stderr.strip().splitlines() == ["interrupted", "atexit ran"], run.stderr[-3000:]


SWALLOWED = ("import gc, signal, sys\nfrom absl import flags\nfrom colorjax import cli\n"
             "def in_gc(phase, info):  # as JAX's _xla_gc_callback, which runs in every collection\n"
             "  gc.callbacks.remove(in_gc)\n  signal.raise_signal(signal.SIGINT)  # Ctrl-C's handler runs here\n"
             "def main(argv):\n  gc.callbacks.append(in_gc)\n  gc.collect()\n{then}\n  print('went on', file=sys.stderr)\n"
             "cli.run(main, flags_parser=flags.FLAGS)")
LANDED = ("Ctrl-C landed where Python ignores it (a garbage collection callback or finalizer): the command goes on "
          "and will exit with status 130; Ctrl-C again stops it now")


@pytest.mark.parametrize("then, status, lines", [
    ("", 130, [LANDED, "went on", "interrupted"]),  # it went on: Python gives no way to stop it there
    # A command that stops on Ctrl-C itself (serve) ends as it chooses when a second one arrives.
    ("  try:\n    signal.raise_signal(signal.SIGINT)\n  except KeyboardInterrupt:\n    pass", 0, [LANDED, "went on"]),
])
def test_a_ctrl_c_that_python_swallowed_in_a_gc_callback_still_ends_in_status_130(then, status, lines):
  run = subprocess.run([sys.executable, "-c", SWALLOWED.format(then=then)], env=FAST_ENV, capture_output=True, text=True)
  assert run.returncode == status and [line for line in run.stderr.splitlines() if line] == lines, run.stderr[-3000:]


def test_other_errors_python_cannot_raise_are_still_printed_as_before():
  code = ("import sys\nfrom absl import flags\nfrom colorjax import cli\nclass Closes:\n"
          "  def __del__(self):\n    raise ValueError('cannot close')\n"
          "def main(argv):\n  Closes()\ncli.run(main, flags_parser=flags.FLAGS)")
  run = subprocess.run([sys.executable, "-c", code], env=FAST_ENV, capture_output=True, text=True)
  assert run.returncode == 0 and "Exception ignored in" in run.stderr and "ValueError: cannot close" in run.stderr


def test_a_file_where_an_output_folder_should_be_is_named_as_such(colorizer, tmp_path, capsys):
  (tmp_path / "in" / "sub").mkdir(parents=True)
  Image.fromarray(photo()[:64, :64]).save(tmp_path / "in" / "sub" / "x.png")
  (tmp_path / "out").mkdir()
  (tmp_path / "out" / "sub").write_text("a file of the user's")
  for overwrite in (False, True):
    assert colorize.colorize_files(colorizer, [str(tmp_path / "in")], str(tmp_path / "out"), overwrite=overwrite) == 1
  assert (tmp_path / "out" / "sub").read_text() == "a file of the user's"
  err = capsys.readouterr().err
  assert err.count("sub/x.png (File exists)") == 2 and "appeared" not in err, err


def unlistable(monkeypatch, name):
  """Folders called `name` cannot be listed, as for a user without the permission (tests run as root)."""
  real = os.scandir

  def scandir(path="."):
    if os.path.basename(path) == name:
      raise PermissionError(13, "Permission denied", os.fspath(path))
    return real(path)

  monkeypatch.setattr(os, "scandir", scandir)


def test_a_folder_that_cannot_be_listed_and_a_link_loop_are_named_not_dropped(colorizer, tmp_path, monkeypatch, capsys):
  tree = tmp_path / "in"
  (tree / "locked").mkdir(parents=True)
  Image.fromarray(photo()[:32, :32]).save(tree / "ok.jpg")
  (tree / "a.jpg").symlink_to(tree / "b.jpg")
  (tree / "b.jpg").symlink_to(tree / "a.jpg")
  unlistable(monkeypatch, "locked")
  assert colorize.colorize_files(colorizer, [str(tree)], str(tmp_path / "out")) == 3
  errors = sorted(l for l in capsys.readouterr().err.splitlines() if l.startswith("error:"))
  assert errors == [f"error: {tree / 'a.jpg'}: a symbolic link that leads nowhere (broken, or a loop)",
                    f"error: {tree / 'b.jpg'}: a symbolic link that leads nowhere (broken, or a loop)",
                    f"error: {tree / 'locked'}: cannot list this folder (Permission denied)"]
  assert os.listdir(tmp_path / "out") == ["ok.png"]
  # Named on its own, a looping link is one error line too (it raised RuntimeError before any output).
  assert colorize.colorize_files(colorizer, [str(tree / "a.jpg"), str(tree / "ok.jpg")], str(tmp_path / "o2")) == 1
  assert "a.jpg: unreadable image ([Errno 40] Too many levels of symbolic links" in capsys.readouterr().err


def test_inference_commands_keep_compiled_models_in_the_users_cache(tmp_path):
  code = "from colorjax import cli; cli.cache_compilations(); import jax; print(jax.config.jax_compilation_cache_dir)"
  env = {k: v for k, v in FAST_ENV.items() if k != "JAX_COMPILATION_CACHE_DIR"}
  out = subprocess.run([sys.executable, "-c", code], env={**env, "XDG_CACHE_HOME": str(tmp_path)},
                       capture_output=True, text=True)
  assert out.stdout.strip() == str(tmp_path / "colorjax" / "jax"), out.stderr[-2000:]
  mine = subprocess.run([sys.executable, "-c", code], env={**env, "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "mine")},
                        capture_output=True, text=True)
  assert mine.stdout.strip() == str(tmp_path / "mine")  # the user's own setting wins
