"""colorjax.evaluate and colorjax.compare on a tiny trained workdir: the numbers agree with the
trainer's eval and with scikit-image, gray and broken photos are skipped and counted."""

import csv
import dataclasses
import glob
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from skimage import color as skcolor

from colorjax import checkpoints, color, colorize, compare, evaluate, metrics, models, train
from colorjax import prepare as prepare_lib
from colorjax.colorize import Colorizer
from colorjax.data import pipeline, shards, sources
from test_fid import _reference_fid, fast_compiles, tiny_feature_fn  # noqa: F401 (an autouse fixture)
from test_train import REPO, tiny_config, write_photos


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
  return write_photos(str(tmp_path_factory.mktemp("photos")))


@pytest.fixture(scope="module")
def run(photos, tmp_path_factory):
  """A workdir trained for 2 steps (the scores need not be good, only computed right)."""
  workdir = str(tmp_path_factory.mktemp("runs") / "tiny")
  config = tiny_config(photos, batch_size=4, total_steps=2, pretrain_steps=2)
  train.train_and_evaluate(config, workdir)
  return workdir


def _colorfulness(rgb):
  """Hasler & Süsstrunk (2003), eq. 3, written out."""
  r, g, b = rgb.astype(np.float64).transpose(2, 0, 1)
  rg, yb = r - g, 0.5 * (r + g) - b
  return np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean())


def test_scores_agree_with_the_trainers_eval_and_scikit_image(run, photos):
  skmetrics = pytest.importorskip("skimage.metrics")
  colorizer = Colorizer.from_workdir(run)
  data = sources.resolve(f"folder:{photos}", "eval", colorizer.config.data.eval_fraction)
  result = evaluate.evaluate(colorizer, data, image_size=32, batch_size=4)
  summary = result.summary()

  final = json.load(open(os.path.join(run, "final_metrics.json")))  # the same photos, in training
  assert len(result.rows) == len(data.files) <= colorizer.config.eval_max_images
  for system, key, final_key in [("model", "psnr", "psnr"), ("model", "ssim", "ssim"),
                                 ("model", "colorfulness", "colorfulness"),
                                 ("no_colour", "psnr", "gray_psnr"), ("no_colour", "ssim", "gray_ssim"),
                                 ("ground_truth", "colorfulness", "real_colorfulness")]:
    assert summary[system][key] == pytest.approx(final[final_key], rel=1e-5), (system, key)

  for row in result.rows:  # each photo again, predicted through Colorizer's NumPy path
    crop = pipeline.load_eval_crop(row["file"], 32)
    l = colorizer.lightness(crop)
    pred = color.to_uint8(color.model_to_rgb(l[..., None], colorizer.predict(l[None])[0], np), np)
    assert row["psnr"] == pytest.approx(skmetrics.peak_signal_noise_ratio(crop, pred, data_range=255), abs=0.05)
    assert row["ssim"] == pytest.approx(skmetrics.structural_similarity(
        crop, pred, channel_axis=-1, data_range=255, gaussian_weights=True, sigma=1.5,
        use_sample_covariance=False), abs=2e-3)
    assert row["mse"] == pytest.approx(np.mean((crop.astype(float) - pred) ** 2), rel=0.02)
    assert row["real_colorfulness"] == pytest.approx(_colorfulness(crop), rel=1e-4)
    assert row["gray_colorfulness"] < 1.0


def test_cli_skips_gray_and_broken_photos_and_writes_json_and_csv(run, tmp_path):
  held_out = write_photos(str(tmp_path / "held_out"), n=5, size=(40, 56), seed=1)
  Image.fromarray(np.tile(np.arange(40, dtype=np.uint8)[:, None] * 6, (1, 48))).save(f"{held_out}/gray.png")
  with open(f"{held_out}/broken.jpg", "wb") as f:
    f.write(b"not a jpeg")
  out = tmp_path / "report" / "report.json"
  cmd = [sys.executable, "-m", "colorjax.evaluate", "--workdir", run, "--data", f"folder:{held_out}",
         "--image-size", "32", "--batch-size", "4", "--render-size", "64", "--out", str(out)]
  env = {**os.environ, "PYTHONPATH": REPO, "JAX_DISABLE_MOST_OPTIMIZATIONS": "1"}
  proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "5 photos (1 grayscale skipped, 1 unreadable skipped)" in proc.stdout
  table = [line for line in proc.stdout.splitlines() if line.startswith("|")]
  assert table[0] == "|  | PSNR (dB) | SSIM | MSE | colourfulness |"
  assert [line.split("|")[1].strip() for line in table[2:]] == [
      "model (step 2)", "no colour (a = b = 0)", "ground truth"]
  assert "FID not computed: pass --fid-weights" in proc.stdout

  report = json.load(open(out))
  assert report["photos"] == 5 and report["step"] == 2 and report["fid"].startswith("FID not computed")
  assert "colorized at render size 64 (coarse colour at 32)" in proc.stdout  # above the training size
  assert report["render_size"] == 64 and report["colour_anchored"] is True
  assert [os.path.basename(f) for f in report["grayscale_skipped"]] == ["gray.png"]
  assert [os.path.basename(f) for f in report["unreadable_skipped"]] == ["broken.jpg"]
  rows = list(csv.DictReader(open(tmp_path / "report" / "report.csv")))
  assert len(rows) == 5
  assert list(rows[0])[:7] == ["file", "psnr", "ssim", "mse", "colorfulness", "gray_psnr", "gray_ssim"]
  assert np.mean([float(r["gray_psnr"]) for r in rows]) == pytest.approx(report["summary"]["no_colour"]["psnr"])
  gains = [float(r["psnr"]) - float(r["gray_psnr"]) for r in rows]
  assert report["psnr_over_no_colour"] == pytest.approx(
      {"mean": statistics.mean(gains), "ci95_half_width": 2.7764 * statistics.stdev(gains) / 5 ** 0.5}, rel=1e-4)
  assert (f"PSNR over no colour: {statistics.mean(gains):+.2f} ± {2.7764 * statistics.stdev(gains) / 5 ** 0.5:.2f} dB "
          "(95 % confidence interval, paired over the 5 photos)") in proc.stdout

  missing = subprocess.run(cmd[:4] + [str(tmp_path / "nowhere")] + cmd[5:] + ["--overwrite"], cwd=REPO, env=env,
                           capture_output=True, text=True)
  assert missing.returncode == 1 and "nowhere' does not exist" in missing.stderr

  (tmp_path / "report" / "report.json").unlink()  # the CSV beside it, maybe the user's, is still there
  again = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
  assert again.returncode == 1 and "report.csv already exists; pass --overwrite to replace it" in again.stderr


class _Terminal(io.StringIO):
  def isatty(self):
    return True


def test_a_terminal_shows_the_photos_scored_as_they_go(run, tmp_path, monkeypatch):
  """A progress bar over the photos to score, those left out while scoring counted too; none
  where stderr is no terminal (a log file, CI)."""
  held_out = write_photos(str(tmp_path / "held_out"), n=5, size=(40, 56), seed=1)
  Image.fromarray(np.full((40, 48), 128, np.uint8)).save(f"{held_out}/gray.png")  # left out by the scan
  data = sources.resolve(f"folder:{held_out}", "all", 0.0)
  data.files.append(f"{held_out}/gone.jpg")  # unreadable only when scored
  colorizer = Colorizer.from_workdir(run)
  monkeypatch.setattr(sys, "stderr", terminal := _Terminal())
  result = evaluate.evaluate(colorizer, data, image_size=32, batch_size=4, label="tiny")
  assert len(result.rows) == 5 and len(result.grayscale) == 1 and list(result.unreadable) == [f"{held_out}/gone.jpg"]
  assert "tiny: 100%" in terminal.getvalue() and "| 6/6 [" in terminal.getvalue()
  monkeypatch.setattr(sys, "stderr", log := io.StringIO())
  evaluate.evaluate(colorizer, data, image_size=32, batch_size=4, label="tiny")
  assert log.getvalue() == ""


def test_the_progress_bar_counts_photos_left_out_after_the_last_batch(run, tmp_path, monkeypatch):
  """A photo that fails after the last full batch yields no batch of its own: the bar still ends
  at all the photos, not short of them."""
  held_out = write_photos(str(tmp_path / "held_out"), n=4, size=(40, 56), seed=2)
  data = sources.resolve(f"folder:{held_out}", "all", 0.0)
  data.files.append(f"{held_out}/gone.jpg")  # unreadable only when scored, after the batch of 4
  monkeypatch.setattr(sys, "stderr", terminal := _Terminal())
  result = evaluate.evaluate(Colorizer.from_workdir(run), data, image_size=32, batch_size=4, label="tiny")
  assert len(result.rows) == 4 and list(result.unreadable) == [f"{held_out}/gone.jpg"]
  assert "| 5/5 [" in terminal.getvalue(), terminal.getvalue()[-300:]


def test_classifier_gets_pixel_accuracy_and_fid_columns(photos):
  config = tiny_config(photos, **{"model.generator": "resnet_colorizer", "model.num_classes": 256,
                                  "model.discriminator": "none"})
  generator = models.build_generator(config)
  variables = jax.jit(generator.init)(jax.random.key(0), jnp.zeros((1, 32, 32, 1)))
  # An initialised head predicts near-uniform classes: gray. Favour a purple (class 165: a, b about
  # +27, -27) and scale the kernel up so the colour varies with the photo.
  head = variables["params"]["head"]
  params = {**variables["params"], "head": {"kernel": 5000 * head["kernel"], "bias": head["bias"].at[165].add(4.0)}}
  colorizer = Colorizer(config, params, variables["batch_stats"])
  data = sources.resolve(f"folder:{photos}", "all", 0.25)
  features = tiny_feature_fn()
  result = evaluate.evaluate(colorizer, data, image_size=32, batch_size=8, features=features)
  summary = result.summary()
  assert "pixel_accuracy" not in summary["no_colour"]

  # Each photo again: its crop colorized as colorize does, scored with scikit-image and NumPy.
  crops = np.stack([pipeline.load_eval_crop(row["file"], 32) for row in result.rows])
  preds = np.stack(colorizer.colorize_batch(list(crops)))
  gray = np.stack([np.round(skcolor.lab2rgb(lab * [1, 0, 0]) * 255).astype(np.uint8)
                   for lab in skcolor.rgb2lab(crops)])
  edges = np.linspace(-1, 1, 17)  # 16 bins per axis over +-110 Lab units

  def classes(rgb):
    bins = np.clip(np.digitize(skcolor.rgb2lab(rgb / 255.0)[..., 1:] / 110.0, edges) - 1, 0, 15)
    return bins[..., 0] * 16 + bins[..., 1]

  accuracy = [np.mean(classes(p) == classes(t)) for p, t in zip(preds, crops)]
  np.testing.assert_allclose([row["pixel_accuracy"] for row in result.rows], accuracy, atol=2 / 32 ** 2)
  assert summary["model"]["pixel_accuracy"] == pytest.approx(np.mean(accuracy), abs=2 / 32 ** 2)

  def frechet(images):  # FID's formula on the stand-in network's features, in NumPy
    fake, real = features(images).astype(np.float64), features(crops).astype(np.float64)
    return _reference_fid(fake.mean(0), np.cov(fake, rowvar=False), real.mean(0), np.cov(real, rowvar=False))

  assert summary["model"]["fid"] == pytest.approx(frechet(preds), rel=1e-5)
  assert summary["no_colour"]["fid"] == pytest.approx(frechet(gray), rel=1e-5)
  table = evaluate.format_table(evaluate.system_rows(summary, "classifier"), [("system", "")])
  assert table.splitlines()[0] == "|  | PSNR (dB) | SSIM | MSE | colourfulness | pixel accuracy | FID |"
  assert table.splitlines()[-1].endswith("| – | – |")  # ground truth: no accuracy, no FID
  # One photo: its scores kept, FID said to be left out (it ended the command with no report).
  one = dataclasses.replace(data, files=data.files[:1])
  alone = evaluate.evaluate(colorizer, one, image_size=32, batch_size=8, features=features)
  assert len(alone.rows) == 1 and alone.fid is None
  assert alone.fid_missing == "FID not computed: it needs at least 2 photos, 1 was scored"


def test_compare_tables_runs_on_the_same_photos(run, photos, tmp_path):
  other = str(tmp_path / "other")
  shutil.copytree(run, other)
  table = compare.compare([run, other], f"folder:{photos}", split="eval", image_size=32, batch_size=4)
  lines = table.splitlines()
  rows = [line.split("|")[1:-1] for line in lines if line.startswith("|")]
  assert [r[0].strip() for r in rows] == ["run", "---", "tiny", "other", "no colour (a = b = 0)", "ground truth"]
  assert rows[2][1].strip() == "pix2pix_unet + patchgan, 32 px" and rows[2][2].strip() == "2"
  assert rows[2][3:-1] == rows[3][3:-1]  # the same weights score the same...
  assert rows[2][-1].strip() == "–" and rows[3][-1].strip() == "+0.00"  # ...exactly (one held-out photo: no interval), paired photo by photo
  assert rows[0][-2].strip() == "PSNR over no colour (95 % CI)" and rows[4][-2].strip() == "–"
  assert "FID not computed" in lines[-1]

  config = json.load(open(os.path.join(other, "config.json")))
  config["data"]["eval_fraction"] = 0.5
  json.dump(config, open(os.path.join(other, "config.json"), "w"))
  with pytest.raises(ValueError, match="same split"):
    compare.compare([run, other], f"folder:{photos}", split="eval", image_size=32, batch_size=4)


def test_split_all_says_which_photos_of_data_a_run_trained_on(tmp_path, monkeypatch, caplog):
  (tmp_path / "photos" / "sub").mkdir(parents=True)
  (tmp_path / "other").mkdir()
  monkeypatch.chdir(tmp_path)
  config = tiny_config(str(tmp_path / "photos"))
  config.data.train = f"folder:{tmp_path / 'photos'},tfds:coco/2017"
  overlapping = ["folder:photos", "folder:photos/sub", f"folder:{tmp_path}", "tfds:coco/2017", "tfds:coco/2017:1.1.0"]
  apart = ["folder:other", "folder:photos2", "shards:photos", "tfds:places365_small", "tfds:coco/2014"]
  for data in overlapping + apart:
    caplog.clear()
    evaluate.warn_if_trained_on(config, "runs/x", data)
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == (data in overlapping), (data, warned)
  caplog.clear()
  evaluate.warn_if_trained_on(config, "runs/x", "folder:other,folder:photos/sub,folder:photos/")
  trained = f"--split all: --data %s holds photos runs/x trained on (data.train folder:{tmp_path / 'photos'}), so " \
            "its scores are not held-out ones; "
  # A folder inside the one trained on is split by other relative paths ("a.jpg", not "sub/a.jpg"):
  # --split eval on it would score photos the run trained on.
  assert sources.in_eval_split("sub/p5.jpg", 0.1) != sources.in_eval_split("p5.jpg", 0.1)
  assert caplog.messages == [
      trained % "folder:photos/sub" + f"--split eval holds out what training did only on --data folder:{tmp_path / 'photos'}",
      trained % "folder:photos/" + "--split eval scores only the photos it held out"]
  caplog.clear()  # and --split eval of that folder inside says so (found 2026-12-02: it did not)
  evaluate.warn_if_trained_on(config, "runs/x", "folder:other,folder:photos/sub,folder:photos/", "eval")
  assert caplog.messages == [
      f"--split eval: --data folder:photos/sub shares photos with runs/x's data.train folder:{tmp_path / 'photos'} "
      "but is split by other relative paths, so its eval split holds photos the run trained on: score --data "
      f"folder:{tmp_path / 'photos'} --split eval, or photos it never saw"]
  caplog.clear()
  config.data.eval = "folder:other"  # all of data.train trained: --split eval refuses the run
  evaluate.warn_if_trained_on(config, "runs/x", "folder:photos")
  assert caplog.messages == [trained % "folder:photos" + "--split eval cannot leave them out (it says why): "
                                                         "score photos it never saw"]
  with pytest.raises(ValueError, match="held out none of data.train"):
    evaluate.held_out_fraction(config, "runs/x")


def test_a_run_without_its_best_checkpoint_yet_is_scored_at_its_latest_and_said_so_once(run, photos, tmp_path):
  early = str(tmp_path / "early")  # stopped before its first eval, its default checkpoint "best"
  shutil.copytree(run, early)
  shutil.rmtree(os.path.join(early, "best"))
  os.mkdir(os.path.join(early, "best"))
  config = json.load(open(os.path.join(early, "config.json")))
  json.dump({**config, "colorize_checkpoint": "best"}, open(os.path.join(early, "config.json"), "w"))
  with mock.patch.object(colorize.logging, "warning") as warning:
    compare.compare([early], f"folder:{photos}", split="eval", image_size=32, batch_size=4)
  assert [c.args[0] for c in warning.call_args_list].count("%s has no best checkpoint yet (it is written at "
                                                            "the first eval): using the latest") == 1


def test_another_systems_pictures_are_scored_on_the_same_crops(photos, tmp_path):
  skmetrics = pytest.importorskip("skimage.metrics")
  data = sources.resolve(f"folder:{photos}", "all", 0.1)
  files, preds = sorted(data.files), tmp_path / "preds"
  (preds / "nested").mkdir(parents=True)
  for f in files[:-1]:  # the last photo gets no prediction
    rgb = np.asarray(Image.open(f).convert("RGB"))
    Image.fromarray((rgb // 2 + 60).astype(np.uint8)).save(preds / "nested" / (os.path.basename(f)[:-4] + ".png"))
  misfit = Image.open(files[0]).resize((17, 19))
  misfit.save(preds / "nested" / (os.path.basename(files[0])[:-4] + ".png"))
  result = evaluate.evaluate(evaluate.PredictionFolder(str(preds)), data, image_size=32, batch_size=4)
  assert "no prediction" in result.unreadable[files[-1]] and "17x19" in result.unreadable[files[0]]
  assert len(result.rows) == len(files) - 2
  for row in result.rows:
    truth = pipeline.load_eval_crop(row["file"], 32)
    pred = pipeline.load_eval_crop(str(preds / "nested" / (os.path.basename(row["file"])[:-4] + ".png")), 32)
    assert row["psnr"] == pytest.approx(skmetrics.peak_signal_noise_ratio(truth, pred, data_range=255), abs=0.05)

  proc = subprocess.run([sys.executable, "-m", "colorjax.evaluate", "--predictions", str(preds), "--data",
                         f"folder:{photos}", "--image-size", "32"], cwd=REPO, capture_output=True, text=True,
                        env={**os.environ, "PYTHONPATH": REPO, "JAX_DISABLE_MOST_OPTIMIZATIONS": "1"})
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert f"{len(files) - 2} photos (0 grayscale skipped, 2 unreadable skipped)" in proc.stdout
  assert "| predictions |" in proc.stdout and "no prediction for it in" in proc.stdout

  # A prediction that is not an image is one unreadable photo; two photos of one name are refused.
  (preds / "nested" / (os.path.basename(files[1])[:-4] + ".png")).write_text("not a picture")
  twin = tmp_path / "twin" / os.path.basename(files[2])
  twin.parent.mkdir()
  shutil.copy(files[2], twin)
  data.files = list(data.files) + [str(twin)]
  with pytest.raises(ValueError, match="share the name"):
    evaluate.evaluate(evaluate.PredictionFolder(str(preds)), data, image_size=32, batch_size=4)
  data.files = data.files[:-1]
  result = evaluate.evaluate(evaluate.PredictionFolder(str(preds)), data, image_size=32, batch_size=4)
  assert "is not a readable image" in result.unreadable[files[1]]


def test_a_large_jpegs_own_pixels_as_a_png_prediction_score_as_identical(tmp_path):
  """Found 2026-12-02: the photo was decoded at the JPEG's reduced scale and its PNG prediction
  whole, so the photo itself saved as PNG scored 36-51 dB, not 100 (free photos, 256 px crops)."""
  (tmp_path / "photos").mkdir()
  (tmp_path / "preds").mkdir()
  y, x = np.mgrid[0:480, 0:640]
  rgb = np.stack([x * 255 // 640, y * 255 // 480, (x + y) % 256], -1).astype(np.uint8)  # detail a draft loses
  Image.fromarray(rgb).save(tmp_path / "photos" / "big.jpg", quality=95)
  Image.open(tmp_path / "photos" / "big.jpg").save(tmp_path / "preds" / "big.png")
  data = sources.resolve(f"folder:{tmp_path / 'photos'}", "all", 0.1)
  result = evaluate.evaluate(evaluate.PredictionFolder(str(tmp_path / "preds")), data, image_size=64, batch_size=4)
  assert [row["psnr"] for row in result.rows] == [metrics.MAX_PSNR]
  # A prediction that keeps the photo's EXIF rotation is cropped turned by it, so it fits: it
  # was refused as 640x480 against the turned photo's 480x640.
  exif = Image.Exif()
  exif[0x0112] = 6  # rotate 90 degrees to show
  Image.fromarray(rgb).save(tmp_path / "photos" / "big.jpg", quality=95, exif=exif)
  shutil.copy(tmp_path / "photos" / "big.jpg", tmp_path / "preds" / "big.jpg")
  os.remove(tmp_path / "preds" / "big.png")
  result = evaluate.evaluate(evaluate.PredictionFolder(str(tmp_path / "preds")), data, image_size=64, batch_size=4)
  assert not result.unreadable and [row["psnr"] for row in result.rows] == [metrics.MAX_PSNR]


@pytest.mark.parametrize("out, problem", [("report.csv", "give a NAME.json file"), ("folder", "give a NAME.json file"),
                                          ("a_file.txt/r.json", "a_file.txt: cannot write there")])
def test_evaluate_out_is_checked_before_scoring(tmp_path, out, problem):
  (tmp_path / "folder").mkdir()
  (tmp_path / "a_file.txt").write_text("the user's")
  proc = subprocess.run([sys.executable, "-m", "colorjax.evaluate", "--predictions", str(tmp_path), "--data",
                         f"folder:{tmp_path}/nothing_here", "--out", str(tmp_path / out)], cwd=REPO, capture_output=True,
                        text=True, env={**os.environ, "PYTHONPATH": REPO})
  errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
  assert proc.returncode == 1 and len(errors) == 1 and problem in errors[0], proc.stderr[-2000:]


@pytest.mark.parametrize("command, flag", [("compare", "--batch_size=0"), ("evaluate", "--eval_fraction=1.5")])
def test_a_number_out_of_range_is_refused_before_scoring(tmp_path, command, flag):
  system = [str(tmp_path)] if command == "compare" else ["--predictions", str(tmp_path)]
  proc = subprocess.run([sys.executable, "-m", f"colorjax.{command}", *system, "--data", f"folder:{tmp_path}", flag],
                        cwd=REPO, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": REPO})
  assert proc.returncode == 1 and proc.stderr.startswith(f"error: flag {flag}: "), proc.stderr[-2000:]
  assert proc.stderr.count("\n") == 1  # one line, as train's


def test_an_empty_eval_split_gets_the_advice_of_the_command_not_trainings(photos, tmp_path):
  """Training's fix (data.eval_fraction) means nothing to a user of evaluate, who has --eval_fraction."""
  empty = "has no image files in split 'eval': eval_fraction 1e-06 puts every photo in the other split"
  with pytest.raises(ValueError, match=f"^--data: .* {empty} \\(score photos the run never saw with --split all\\)$"):
    evaluate.resolve_scored(f"folder:{photos}", "eval", 1e-6)  # a run's share, as compare's
  proc = subprocess.run([sys.executable, "-m", "colorjax.evaluate", "--predictions", str(tmp_path), "--data",
                         f"folder:{photos}", "--split", "eval", "--eval_fraction", "1e-6"], cwd=REPO,
                        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": REPO})
  assert proc.returncode == 1 and proc.stderr.strip().splitlines() == [
      f"error: --data: data source 'folder:{photos}' {empty} (raise --eval_fraction)"], proc.stderr[-2000:]


def test_an_out_folder_made_for_a_command_that_then_fails_is_not_left_behind(tmp_path):
  proc = subprocess.run([sys.executable, "-m", "colorjax.evaluate", "--predictions", str(tmp_path), "--data",
                         f"folder:{tmp_path}/nothing_here", "--out", str(tmp_path / "new" / "r.json")], cwd=REPO,
                        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": REPO})
  assert proc.returncode == 1 and "nothing_here" in proc.stderr, proc.stderr[-2000:]
  assert not (tmp_path / "new").exists()


def _copy_run(run, workdir, **data):
  """A copy of `run` whose config.json says it trained on other `data` (the weights are the same)."""
  shutil.copytree(run, workdir)
  config = json.load(open(os.path.join(workdir, "config.json")))
  config["data"].update(data)
  json.dump(config, open(os.path.join(workdir, "config.json"), "w"))
  return str(workdir)


def test_split_eval_holds_out_what_a_shards_run_held_out(run, photos, tmp_path):
  """A run on shards held out the fraction prepare split them with, not its data.eval_fraction."""
  prepare_lib.prepare(f"folder:{photos}", str(tmp_path / "shards"), size=32, eval_fraction=0.3, workers=1,
                      progress=False)
  held_out = sorted(shards.unpack_record(r)[0] for r in shards.open_split(tmp_path / "shards", "eval"))
  assert held_out == sorted(os.path.relpath(f, photos) for f in sources.list_folder(photos, "eval", 0.3))
  assert held_out != sorted(os.path.relpath(f, photos) for f in sources.list_folder(photos, "eval", 0.8))
  on_shards = _copy_run(run, tmp_path / "on_shards", train=f"shards:{tmp_path / 'shards'}", eval_fraction=0.8)

  out = tmp_path / "report.json"
  proc = subprocess.run([sys.executable, "-m", "colorjax.evaluate", "--workdir", on_shards, "--data",
                         f"folder:{photos}", "--split", "eval", "--image-size", "32", "--out", str(out)],
                        cwd=REPO, capture_output=True, text=True,
                        env={**os.environ, "PYTHONPATH": REPO, "JAX_DISABLE_MOST_OPTIMIZATIONS": "1"})
  assert proc.returncode == 0, proc.stderr[-3000:]
  scored = [os.path.relpath(row["file"], photos) for row in csv.DictReader(open(tmp_path / "report.csv"))]
  assert sorted(scored) == held_out  # none it trained on (the 0.8 of its config.json scored some)
  assert f"[eval: eval_fraction 0.3, from shards:{tmp_path / 'shards'}'s manifest.json]" in proc.stdout
  assert json.load(open(out))["eval_fraction"] == 0.3

  table = compare.compare([on_shards], f"folder:{photos}", split="eval", image_size=32, batch_size=4)
  assert table.startswith(f"{len(held_out)} photos (") and "[eval: eval_fraction 0.3, from shards:" in table

  # No one fraction holds out photos of both a 0.3 shard split and a 0.8 folder split; with
  # data.eval set, a folder trained whole and held out nothing.
  mixed = _copy_run(run, tmp_path / "mixed", train=f"shards:{tmp_path / 'shards'},folder:{photos}", eval_fraction=0.8)
  with pytest.raises(ValueError, match=r"different eval fractions \(0.3 \(shards:.*; 0.8 \(the run's data.eval"):
    compare.compare([mixed], f"folder:{photos}", split="eval", image_size=32, batch_size=4)
  whole = _copy_run(run, tmp_path / "whole", eval=f"folder:{photos}")
  with pytest.raises(ValueError, match="held out none of data.train"):
    compare.compare([whole], f"folder:{photos}", split="eval", image_size=32, batch_size=4)
  # Shards split 0.3 for a run that held out 0.1 of the same photos: their eval split has some it trained on.
  on_folder = _copy_run(run, tmp_path / "on_folder", train=f"folder:{photos}", eval_fraction=0.1)
  with pytest.raises(ValueError, match=r"prepared with eval_fraction 0.3, but the run held out 0.1 of its data"):
    compare.compare([on_folder], f"shards:{tmp_path / 'shards'}", split="eval", image_size=32, batch_size=4)
  # Another system's pictures without --eval_fraction: the shards' own split, no refusal.
  assert len(evaluate.resolve_scored(f"shards:{tmp_path / 'shards'}", "eval", 0.1, held_out_by="").files) == len(held_out)


def test_compare_names_runs_that_share_a_folder_name(run, photos, tmp_path):
  first = _copy_run(run, tmp_path / "a" / "tiny")
  second = _copy_run(run, tmp_path / "b" / "tiny")
  table = compare.compare([first, second], f"folder:{photos}", split="eval", image_size=32, batch_size=4)
  rows = [line.split("|")[1].strip() for line in table.splitlines() if line.startswith("|")]
  assert rows[2:4] == ["a/tiny", "b/tiny"]
  assert compare.run_labels(["x/a/run", "y/a/run/", "b/run", "solo"]) == ["x/a/run", "y/a/run", "b/run", "solo"]
  assert compare.run_labels(["run", "../run", "runs/r1", "runs/r1"]) == ["run", "../run", "r1", "r1 (2)"]
  assert compare.run_labels(["/abs/demo", "/abs/demo/", "/b/run", "/a/run"]) == ["demo", "demo (2)", "b/run", "a/run"]


def test_compare_checks_every_workdir_and_the_data_before_scoring(run, photos, tmp_path, monkeypatch):
  scored, loaded = [], []
  real_evaluate, real_load = evaluate.evaluate, Colorizer.from_workdir
  monkeypatch.setattr(evaluate, "evaluate", lambda *a, **k: scored.append(a) or real_evaluate(*a, **k))
  monkeypatch.setattr(Colorizer, "from_workdir", lambda *a, **k: loaded.append(a) or real_load(*a, **k))
  untrained = _copy_run(run, tmp_path / "untrained")
  shutil.rmtree(os.path.join(untrained, "checkpoints"))
  for workdirs, data, error in [([run, str(tmp_path / "typo")], f"folder:{photos}", "typo' does not exist"),
                                ([run, untrained], f"folder:{photos}", "has no checkpoint yet"),
                                ([run], f"folder:{tmp_path / 'nowhere'}", "does not exist")]:
    with pytest.raises(FileNotFoundError, match=error):
      compare.compare(workdirs, data, image_size=32, batch_size=4)
    assert not scored and not loaded, error
  with pytest.raises(FileNotFoundError, match=r"no checkpoint 7 in .*checkpoints \(has \[2\]\)"):
    compare.compare([run], f"folder:{photos}", checkpoint="7", image_size=32, batch_size=4)
  damaged = _copy_run(run, tmp_path / "damaged")
  for data_file in glob.glob(os.path.join(damaged, "*", "[0-9]*", "**", "d", "*"), recursive=True):
    os.truncate(data_file, 1000)  # every array file of every saved step, cut short
  with pytest.raises(checkpoints.UnreadableCheckpoint, match="cannot be read"):
    compare.compare([run, damaged], f"folder:{photos}", image_size=32, batch_size=4)
  assert not scored


@pytest.mark.parametrize("folder", ["nowhere", "empty"])
def test_evaluate_finds_a_missing_or_empty_data_before_loading_the_model(run, tmp_path, folder):
  (tmp_path / "empty").mkdir()
  loads_no_model = ("import runpy, sys\nfrom colorjax.colorize import Colorizer\n"
                    "Colorizer.from_workdir = classmethod(lambda *a, **k: sys.exit('error: the model was loaded'))\n"
                    "runpy.run_module('colorjax.evaluate', run_name='__main__')")
  proc = subprocess.run([sys.executable, "-c", loads_no_model, "--workdir", run, "--data",
                         f"folder:{tmp_path / folder}", "--split", "eval"], cwd=REPO, capture_output=True, text=True,
                        env={**os.environ, "PYTHONPATH": REPO})
  assert proc.returncode == 1, proc.stderr[-3000:]
  assert ("does not exist" if folder == "nowhere" else "has no image files") in proc.stderr, proc.stderr[-3000:]
  assert "the model was loaded" not in proc.stderr


def test_compare_command_writes_its_table_and_keeps_an_existing_one(run, photos, tmp_path):
  out = tmp_path / "table.md"
  cmd = [sys.executable, "-m", "colorjax.compare", run, run, "--data", f"folder:{photos}", "--image-size", "32",
         "--batch-size", "4", "--out", str(out)]
  env = {**os.environ, "PYTHONPATH": REPO, "JAX_DISABLE_MOST_OPTIMIZATIONS": "1"}
  proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
  assert proc.returncode == 0, proc.stderr[-3000:]
  table = out.read_text()
  assert table.strip() == proc.stdout.strip()  # what it printed
  rows = [line.split("|")[1:-1] for line in table.splitlines() if line.startswith("|")]
  name = os.path.basename(run)  # the same run twice: numbered, not told apart by its whole path
  assert [r[0].strip() for r in rows[2:]] == [name, f"{name} (2)", "no colour (a = b = 0)", "ground truth"]
  assert rows[3][-1].strip().startswith("+0.00 ± 0.00")  # the same run twice: no gain, no doubt
  assert proc.stderr.count(f"--split all: --data folder:{photos} holds photos {run} trained on") == 2  # each time given
  again = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
  assert again.returncode == 1 and "table.md already exists; pass --overwrite" in again.stderr
  assert out.read_text() == table
  folder = subprocess.run(cmd[:-1] + [str(tmp_path)], cwd=REPO, env=env, capture_output=True, text=True)
  assert folder.returncode == 1 and "is a directory: give the markdown file to write" in folder.stderr
