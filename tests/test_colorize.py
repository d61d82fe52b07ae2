"""Colorizer and the colorize command line on a tiny checkpoint trained here."""

import errno
import functools
import gc
import json
import os
import shutil
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image
from skimage import color as skcolor

from colorjax import config as config_lib
from colorjax import checkpoints, export, models, train
from colorjax.colorize import Colorizer, _resize_ab, anchor_colour

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def colourful(h, w, seed=0):
  rng = np.random.default_rng(seed)
  y, x = np.mgrid[0:h, 0:w] / max(h, w, 1)
  img = np.stack([x, y, 1 - x * y], -1) * rng.uniform(0.4, 1.0, 3)
  top, left = rng.integers(0, max(1, h // 2)), rng.integers(0, max(1, w // 2))
  img[top:top + h // 3, left:left + w // 3] = rng.uniform(0, 1, 3)
  return (img * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  photos = tmp_path_factory.mktemp("photos")
  for i in range(12):
    Image.fromarray(colourful(48, 64, seed=i)).save(photos / f"photo_{i:02d}.png")
  c = config_lib.default_config()
  c.image_size, c.batch_size = 32, 4
  # both steps in the pretrain phase: PatchGAN is built, initialised and checkpointed (so
  # from_workdir restores a full G+D state), but the GAN step's compile (~25 s on CPU) is skipped
  c.total_steps, c.pretrain_steps = 2, 2
  c.eval_every = c.checkpoint_every = 2
  c.log_every = 1
  c.eval_max_images = 4
  c.data.train = f"folder:{photos}"
  c.data.eval_fraction = 0.3
  # a small pix2pix U-Net: colorize treats every generator alike, and this one compiles in seconds
  c.model.generator, c.model.num_downs, c.model.ngf = "pix2pix_unet", 5, 8
  c.model.discriminator, c.model.ndf = "patchgan", 8
  w = str(tmp_path_factory.mktemp("workdir"))
  train.train_and_evaluate(c, w)
  return w


@pytest.fixture(scope="module")
def colorizer(workdir):
  return Colorizer.from_workdir(workdir)


def _l(rgb):
  return skcolor.rgb2lab(rgb.astype(np.float64) / 255.0)[..., 0]


@pytest.mark.parametrize("shape", [(1, 1), (33, 77), (200, 50)])
def test_colorize_gray_keeps_size_and_luminance(colorizer, shape):
  gray = np.random.default_rng(0).integers(0, 256, shape).astype(np.uint8)
  out = colorizer(gray)
  assert out.dtype == np.uint8 and out.shape == shape + (3,)
  target = _l(np.repeat(gray[..., None], 3, -1))
  assert np.abs(_l(out) - target).max() <= 1.5


@pytest.mark.parametrize("shape", [(1, 1), (33, 77), (200, 50)])
def test_colorize_rgb_keeps_size_and_luminance(colorizer, shape):
  rgb = colourful(*shape, seed=5)
  out = colorizer(rgb)
  assert out.dtype == np.uint8 and out.shape == shape + (3,)
  assert np.abs(_l(out) - _l(rgb)).max() <= 1.5


def test_from_workdir_without_config(tmp_path):
  with pytest.raises(FileNotFoundError, match="not a colorjax workdir .no config.json.: train first"):
    Colorizer.from_workdir(str(tmp_path))
  (tmp_path / "checkpoints").mkdir()  # a run that stopped before its first save, killed before cleaning up
  with pytest.raises(FileNotFoundError, match="not a colorjax workdir .no config.json.: train first"):
    Colorizer.from_workdir(str(tmp_path))
  (tmp_path / "checkpoints" / "2").mkdir()  # a workdir copied without its config
  with pytest.raises(FileNotFoundError, match="has checkpoints but no config.json.*copy it from the run's workdir"):
    Colorizer.from_workdir(str(tmp_path))


def test_temperature_is_only_for_ab_class_models(workdir):
  with pytest.raises(ValueError, match="temperature applies to ab-class models"):
    Colorizer.from_workdir(workdir, temperature=0.5)


def test_prior_correction_reads_the_runs_class_weights(workdir, tmp_path):
  with pytest.raises(ValueError, match="prior_correction applies to ab-class models"):
    Colorizer.from_workdir(workdir, prior_correction=1.0)
  photos = tmp_path / "photos"
  photos.mkdir()
  for i in range(8):
    Image.fromarray(colourful(40, 40, seed=i)).save(photos / f"photo_{i}.png")
  c = config_lib.default_config()
  c.image_size, c.batch_size, c.total_steps, c.pretrain_steps = 32, 4, 2, 2
  c.eval_every = c.checkpoint_every = c.log_every = 2
  c.eval_max_images, c.data.train, c.data.eval_fraction = 4, f"folder:{photos}", 0.3
  c.model.generator, c.model.num_classes, c.model.discriminator = "resnet_colorizer", 256, "none"
  c.model.prior_correction = 1.0
  run = str(tmp_path / "run")
  train.train_and_evaluate(c, run)

  histogram = os.path.join(run, "ab_histogram.json")
  with open(histogram) as f:
    weights = train.class_weights_from_counts(c, np.asarray(json.load(f)["counts"]))
  corrected = Colorizer.from_workdir(run)
  np.testing.assert_allclose(corrected.generator.prior_shift, -np.log(weights), rtol=1e-6)
  biased = Colorizer.from_workdir(run, prior_correction=0.0)
  assert biased.generator.prior_shift == ()
  photo = colourful(40, 56, seed=3)
  assert not np.array_equal(corrected(photo), biased(photo))
  os.remove(histogram)
  with pytest.raises(FileNotFoundError, match="ab_histogram.json is missing"):
    Colorizer.from_workdir(run)


def _run_cli(workdir, *args):
  env = dict(os.environ, PYTHONPATH=REPO)
  return subprocess.run([sys.executable, "-m", "colorjax.colorize", "--workdir", workdir, *args],
                        capture_output=True, text=True, env=env, cwd=REPO, timeout=300)


def _snapshot(folder):
  return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_cli_folder_tree_bad_file_and_alpha(workdir, tmp_path):
  src, out = tmp_path / "in", tmp_path / "out"
  (src / "sub").mkdir(parents=True)
  Image.fromarray(colourful(40, 56, seed=1)).save(src / "a.jpg", quality=90)
  Image.fromarray(colourful(30, 30, seed=2)[..., 0]).save(src / "sub" / "x.png")
  rgba = np.dstack([colourful(36, 44, seed=3), np.tile(np.arange(44, dtype=np.uint8) * 5, (36, 1))])
  Image.fromarray(rgba).save(src / "alpha.png")
  (src / "bad.jpg").write_text("not an image\n")
  (src / "clip.gif").write_bytes(b"GIF89a")
  before = _snapshot(src)

  r = _run_cli(workdir, str(src), "--out", str(out))
  assert r.returncode == 1, r.stderr
  errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and "bad.jpg" in errors[0], r.stderr
  assert "note: left alone, not .jpg/.jpeg/.png/.webp/.bmp/.tif/.tiff images: clip.gif\n" in r.stderr
  assert sorted(str(p.relative_to(out)) for p in out.rglob("*.png")) == sorted(
      ["a.png", "alpha.png", os.path.join("sub", "x.png")])
  with Image.open(out / "sub" / "x.png") as im:
    assert im.size == (30, 30) and im.mode == "RGB"
  with Image.open(out / "a.png") as im:
    assert im.size == (56, 40)
  with Image.open(out / "alpha.png") as im:
    assert im.mode == "RGBA" and im.size == (44, 36)
    np.testing.assert_array_equal(np.asarray(im)[..., 3], rgba[..., 3])
    # the lightness of the pixels' own colour, half-transparent ones too (not laid on white first)
    lightness = lambda rgb: skcolor.rgb2lab(rgb[..., :3])[..., 0]
    assert np.abs(lightness(np.asarray(im)) - lightness(rgba)).max() < 1.5
  assert _snapshot(src) == before

  # Files already in --out are kept, one error line each, unless --overwrite.
  (out / "a.png").write_bytes(b"the user's own file")
  written = _snapshot(out)
  r = _run_cli(workdir, str(src / "a.jpg"), str(src / "alpha.png"), "--out", str(out))
  assert r.returncode == 1 and r.stderr.count("already exists; pass --overwrite") == 2, r.stderr
  assert _snapshot(out) == written
  r = _run_cli(workdir, str(src), "--out", str(out), "--skip-existing")  # finishing an interrupted run
  assert "3 already in" in r.stderr and "kept (--skip-existing)" in r.stderr, r.stderr
  assert r.returncode == 1 and "1 of 4 inputs failed" in r.stderr  # only bad.jpg, again
  assert _snapshot(out) == written
  r = _run_cli(workdir, str(src / "a.jpg"), "--out", str(out), "--overwrite")
  assert r.returncode == 0, r.stderr
  with Image.open(out / "a.png") as im:
    assert im.size == (56, 40)


@pytest.mark.parametrize("as_file", [True, False], ids=["file", "folder"])
def test_cli_out_is_input_folder_never_overwrites(workdir, tmp_path, as_file):
  src = tmp_path / "in"
  src.mkdir()
  Image.fromarray(colourful(20, 24, seed=4)).save(src / "x.png")
  before = _snapshot(src)
  r = _run_cli(workdir, str(src / "x.png") if as_file else str(src), "--out", str(src))
  assert r.returncode == 1, r.stderr
  errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1, r.stderr
  if as_file:
    assert "x.png" in errors[0] and "overwrite" in errors[0], r.stderr
  else:
    assert "inside --out" in errors[0] and "choose another --out" in errors[0], r.stderr
  assert _snapshot(src) == before


def test_anchor_colour_keeps_the_renders_detail_and_the_coarse_colour():
  y, x = np.mgrid[0:16, 0:24] / 8.0
  coarse = 0.4 * np.stack([np.sin(x + y), np.cos(x - 2 * y)], -1).astype(np.float32)  # the 16x24 render
  fy, fx = np.mgrid[0:64, 0:96] / 32.0
  detail = np.where(np.indices((64, 96, 2)).sum(0) % 2 == 1, 0.1, -0.1).astype(np.float32)
  fine = 0.3 * np.stack([np.cos(fx), np.sin(fx - fy)], -1).astype(np.float32) + detail  # the 64x96 render
  out = anchor_colour(fine, coarse)
  # seen at the coarse size it is the coarse render's colour; the fine render's detail stays on top
  np.testing.assert_allclose(_resize_ab(out, (16, 24))[2:-2, 2:-2], coarse[2:-2, 2:-2], atol=0.02)
  np.testing.assert_allclose((out - _resize_ab(coarse, (64, 96)))[8:-8, 8:-8], detail[8:-8, 8:-8], atol=0.02)
  # a flat colour is replaced exactly
  flat = anchor_colour(0.3 + detail, np.full((16, 24, 2), -0.2, np.float32))
  np.testing.assert_allclose(flat[8:-8, 8:-8], -0.2 + detail[8:-8, 8:-8], atol=2e-3)


def _coarse_ab(rgb, block=16):
  ab = skcolor.rgb2lab(rgb.astype(np.float64) / 255.0)[..., 1:]
  h, w = (s // block * block for s in ab.shape[:2])
  return ab[:h, :w].reshape(h // block, block, w // block, block, 2).mean((1, 3))


class EdgeColorizer(Colorizer):
  """The tiny run's Colorizer with colour that depends on scale, as a trained network's does
  (the fixture's two steps give almost none): a and b from the gradient of L per render pixel."""

  def predict(self, l_small):
    edges = np.abs(np.gradient(l_small, axis=-1)) + np.abs(np.gradient(l_small, axis=-2))
    return np.stack([np.clip(8 * edges, 0, 1), -np.clip(4 * edges, 0, 1)], -1)


def test_colour_does_not_drift_with_the_render_size(workdir):
  """Above the training size (32 px) the coarse colour is the training-size render's."""
  base = Colorizer.from_workdir(workdir)
  colorizer = functools.partial(EdgeColorizer, base.config, base.variables["params"], base.variables["batch_stats"])
  photo = colourful(192, 256, seed=3)
  at_training_size = _coarse_ab(colorizer()(photo))
  for size in (64, 128):
    anchored, plain = colorizer(size), colorizer(size, colour_at_render_size=True)
    assert anchored.anchored and not plain.anchored
    drift = np.abs(_coarse_ab(anchored(photo)) - at_training_size).mean()
    plain_drift = np.abs(_coarse_ab(plain(photo)) - at_training_size).mean()
    assert drift < 1 and plain_drift > 5  # Lab units; this colour averages 11.6 in |a|, |b|


def _with_a_later_step(workdir, tmp_path):
  """A copy of the run whose checkpoints are steps 2 and 4 (4 a copy of 2)."""
  w = str(tmp_path / "run")
  shutil.copytree(workdir, w)
  shutil.copytree(os.path.join(w, "checkpoints", "2"), os.path.join(w, "checkpoints", "4"))
  return w


# orbax leaves the reads of a damaged checkpoint as coroutines never awaited; they are collected
# here, not as warnings in whichever test runs next.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_damaged_checkpoint_names_the_one_before_it(workdir, tmp_path):
  w = _with_a_later_step(workdir, tmp_path)
  data = os.path.join(w, "checkpoints", "4", "state", "ocdbt.process_0", "d")
  for name in os.listdir(data):  # as a copy cut short leaves them (colorize reads only some arrays)
    os.truncate(os.path.join(data, name), 16)
  # tensorstore's error, which names the array and the fault, not orbax's wrapper of it
  with pytest.raises(checkpoints.UnreadableCheckpoint,
                     match=fr"checkpoint 4 in {w}/checkpoints cannot be read \(OUT_OF_RANGE: Error reading \"g_.*\" in "
                           fr"OCDBT database .*\); .*move {w}/checkpoints/4 out of the workdir to use step 2"):
    Colorizer.from_workdir(w, "latest")
  assert Colorizer.from_workdir(w, 2).step == 2
  # The command says so in one line, not with the tracebacks of the reads orbax abandoned (217
  # lines without `checkpoints._hush_abandoned_io`).
  Image.fromarray(np.full((40, 40), 128, np.uint8)).save(tmp_path / "photo.png")
  run = _run_cli(w, "--checkpoint", "latest", "--out", str(tmp_path / "out"), str(tmp_path / "photo.png"))
  lines = run.stderr.splitlines()
  assert run.returncode == 1 and len(lines) == 1, run.stderr[-3000:]
  assert lines[0].startswith(f"error: checkpoint 4 in {w}/checkpoints cannot be read (OUT_OF_RANGE: Error reading")
  metadata = os.path.join(w, "checkpoints", "4", "state", "_METADATA")
  with open(metadata, "r+b") as f:
    f.truncate(os.path.getsize(metadata) // 2)
  with pytest.raises(checkpoints.UnreadableCheckpoint,
                     match=r"checkpoint 4 .* cannot be read \(its metadata is not JSON: Expecting .*\); .*use step 2"):
    Colorizer.from_workdir(w, "latest")
  gc.collect()


def test_a_checkpoint_replaced_while_read_is_read_again(workdir, tmp_path, monkeypatch):
  """As when a run still training rotates `latest` or `best` out from under colorize."""
  w = _with_a_later_step(workdir, tmp_path)
  restore = checkpoints.restore_fields

  def rotated_while_read(mgr, state, step, fields, item):
    if step == 4:
      shutil.rmtree(os.path.join(w, "checkpoints", "4"))
      raise checkpoints.UnreadableCheckpoint(str(mgr.directory), 4, FileNotFoundError("gone"))
    return restore(mgr, state, step, fields, item)

  monkeypatch.setattr(checkpoints, "restore_fields", rotated_while_read)
  assert Colorizer.from_workdir(w, "latest").step == 2


def test_checkpoints_that_do_not_fit_the_runs_config_are_named_in_one_line(workdir, tmp_path):
  w = str(tmp_path / "run")
  shutil.copytree(workdir, w)
  config = json.load(open(os.path.join(w, "config.json")))
  config["model"]["ngf"] = 16
  json.dump(config, open(os.path.join(w, "config.json"), "w"))
  with pytest.raises(ValueError, match=r"checkpoint 2 in .* does not fit the run's config.json \(g_.* and \d+ more arrays\)"):
    Colorizer.from_workdir(w, "best")


def test_only_the_generators_inference_weights_are_restored_and_they_are_the_saved_ones(workdir):
  colorizer = Colorizer.from_workdir(workdir, "latest")
  config = colorizer.config
  abstract = jax.eval_shape(functools.partial(
      train.create_train_state, config, generator=models.build_generator(config),
      discriminator=models.build_discriminator(config)), jax.random.key(0))
  state = checkpoints.restore_state(checkpoints.open_checkpoints(os.path.join(workdir, "checkpoints")), abstract)
  assert state.d_params is not None and state.g_opt is not None  # what training saved besides
  want = {"params": train.inference_params(state), "batch_stats": state.g_stats}
  assert jax.tree.structure(colorizer.variables) == jax.tree.structure(want)
  for a, b in zip(jax.tree.leaves(colorizer.variables), jax.tree.leaves(want)):
    np.testing.assert_array_equal(a, b)


def test_an_exported_model_colorizes_as_its_run_and_is_a_fraction_of_it(workdir, tmp_path):
  out = tmp_path / "model"
  export.export(workdir, str(out), "latest")
  run, packed = Colorizer.from_workdir(workdir, "latest"), Colorizer.from_workdir(str(out))
  photo = colourful(40, 56, seed=3)
  np.testing.assert_array_equal(packed(photo), run(photo))
  assert packed.step == run.step and packed.checkpoint == "best"
  size = lambda d: sum(os.path.getsize(os.path.join(p, f)) for p, _, fs in os.walk(d) for f in fs)
  assert size(out) < size(workdir) / 3  # no Adam states, no D, no second checkpoint (the demo: 58 of 989 MB)
  assert sorted(os.listdir(out)) == ["best", "config.json", "exported.json"]
  with pytest.raises(ValueError, match="exists and is not an empty folder"):
    export.export(workdir, str(out))
  assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no partial folder left
  with pytest.raises(FileNotFoundError, match="it is an exported model"):
    Colorizer.from_workdir(str(out), "latest")
  config = config_lib.default_config()
  config.data.train = "folder:/nowhere"
  with pytest.raises(ValueError, match="holds a model exported for colorizing, not a run"):
    train.train_and_evaluate(config, str(out))


def test_export_checks_where_it_writes_before_it_loads_the_model(tmp_path):
  (tmp_path / "a_file").write_text("the user's")
  run = subprocess.run([sys.executable, "-m", "colorjax.export", "--workdir", str(tmp_path / "no_run_needed"),
                        "--out", str(tmp_path / "a_file" / "model")], cwd=REPO, env={**os.environ, "PYTHONPATH": REPO},
                       capture_output=True, text=True)
  assert run.returncode == 1 and run.stderr.strip().splitlines()[-1] == (
      f"error: --out {tmp_path / 'a_file'}: cannot write there (File exists)"), run.stderr[-2000:]


def test_an_export_that_fails_while_writing_leaves_nothing_behind(workdir, tmp_path, monkeypatch):
  def full(path, data):
    raise OSError(errno.ENOSPC, "No space left on device", path)

  monkeypatch.setattr(export.shards, "write_json", full)
  with pytest.raises(OSError, match="No space left"):
    export.export(workdir, str(tmp_path / "model"))
  assert os.listdir(tmp_path) == []


def test_export_into_an_empty_folder_given_as_dot_or_as_a_link(workdir, tmp_path, monkeypatch):
  """Its files are moved in (the folder may be the working directory, or on another disk than
  the link): renaming a partial folder beside `.` or over a link failed after the whole write."""
  (tmp_path / "here").mkdir()
  (tmp_path / "there").mkdir()
  (tmp_path / "link").symlink_to(tmp_path / "there")
  monkeypatch.chdir(tmp_path / "here")
  export.export(workdir, ".", "latest")
  export.export(workdir, str(tmp_path / "link"), "latest")
  assert sorted(os.listdir(tmp_path)) == ["here", "link", "there"]
  photo = colourful(40, 56, seed=3)
  want = Colorizer.from_workdir(workdir, "latest")(photo)
  for folder in ("here", "link"):
    assert sorted(os.listdir(tmp_path / folder)) == ["best", "config.json", "exported.json"]
    np.testing.assert_array_equal(Colorizer.from_workdir(str(tmp_path / folder))(photo), want)


def test_an_export_interrupted_while_writing_leaves_nothing_behind(workdir, tmp_path, monkeypatch):
  """Ctrl-C is held until the write ends (tensorstore's threads would go on writing into the
  folder being removed: a 48 MB partial folder was left), then the export stops and cleans up."""
  save, finished = checkpoints.save_tree, []
  def interrupted(*args):
    signal.raise_signal(signal.SIGINT)
    save(*args)
    finished.append(True)
  monkeypatch.setattr(export.checkpoints, "save_tree", interrupted)
  with pytest.raises(KeyboardInterrupt):
    export.export(workdir, str(tmp_path / "model"))
  assert finished and os.listdir(tmp_path) == []
  assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
