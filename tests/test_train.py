"""The trainer end to end on generated photos: phases, sharding, checkpoints and resumption."""

import datetime
import functools
import importlib.metadata
import io
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest
from PIL import Image

from colorjax import config as config_lib
from colorjax import checkpoints, color, models, train, writers
from colorjax.colorize import Colorizer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_photos(folder, n=16, size=(48, 40), seed=0):
  """Smooth colourful images: a hue gradient plus a coloured square at a random place."""
  os.makedirs(folder, exist_ok=True)
  rng = np.random.default_rng(seed)
  for i in range(n):
    h, w = size
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    img = np.stack([x, y, 1 - x * y], -1) * rng.uniform(0.4, 1.0, 3)
    top, left = rng.integers(0, h // 2), rng.integers(0, w // 2)
    img[top:top + h // 3, left:left + w // 3] = rng.uniform(0, 1, 3)
    Image.fromarray((img * 255).astype(np.uint8)).save(os.path.join(folder, f"photo_{i:02d}.png"))
  return folder


def tiny_config(data_dir, **overrides):
  c = config_lib.default_config()
  c.data.train = f"folder:{data_dir}"
  c.data.eval_fraction = 0.25
  c.image_size, c.batch_size = 32, 8
  c.total_steps, c.pretrain_steps = 6, 3
  c.log_every = c.eval_every = c.checkpoint_every = 2
  c.eval_max_images = 8
  c.model.generator, c.model.num_downs, c.model.ngf, c.model.ndf = "pix2pix_unet", 5, 8, 8
  for key, value in overrides.items():
    node = c
    *path, last = key.split(".")
    for p in path:
      node = node[p]
    node[last] = value
  return c


def _cli_overrides(c):
  return [f"--config.{k}={v}" for k, v in [
      ("data.train", c.data.train), ("data.eval_fraction", c.data.eval_fraction),
      ("image_size", c.image_size), ("batch_size", c.batch_size), ("total_steps", c.total_steps),
      ("pretrain_steps", c.pretrain_steps), ("log_every", c.log_every), ("eval_every", c.eval_every),
      ("checkpoint_every", c.checkpoint_every), ("eval_max_images", c.eval_max_images),
      ("ema_decay", c.ema_decay), ("data.max_zoom", c.data.max_zoom), ("data.num_workers", c.data.num_workers),
      ("keep_samples", c.keep_samples),
      ("model.generator", c.model.generator), ("model.num_downs", c.model.num_downs),
      ("model.ngf", c.model.ngf), ("model.ndf", c.model.ndf)]]


def _final_params(workdir, config):
  trainer = train.Trainer(config)
  mgr = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"))
  state = checkpoints.restore_state(mgr, trainer.init_state())
  return int(state.step), jax.device_get((state.g_params, state.g_stats, state.d_params, state.d_opt))


def _train_cli(config, workdir, pythonpath=REPO, env=(), **popen):
  cmd = [sys.executable, "-m", "colorjax.train", "--config", os.path.join(REPO, "configs/demo.py"),
         "--workdir", str(workdir), *_cli_overrides(config)]
  return subprocess.Popen(cmd, cwd=REPO, env={**os.environ, "PYTHONPATH": pythonpath, **dict(env)},
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
  return write_photos(str(tmp_path_factory.mktemp("photos")))


@pytest.fixture(scope="module")
def tiny_run(photos, tmp_path_factory):
  """A finished tiny run, its workdir and summary, for the tests that only read what it wrote."""
  workdir = tmp_path_factory.mktemp("tiny_run")
  return workdir, train.train_and_evaluate(tiny_config(photos), str(workdir))


def test_train_and_evaluate_writes_everything_a_user_reads(tiny_run):
  workdir, summary = tiny_run
  for key in ("psnr", "ssim", "gray_psnr", "gray_ssim", "colorfulness", "real_colorfulness", "l1"):
    assert np.isfinite(summary[key]), key
  final = json.load(open(workdir / "final_metrics.json"))
  assert final["step"] == 6 and final["psnr"] == pytest.approx(summary["psnr"])
  rows = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
  assert {"train/g_recon", "train/img_per_s"} <= set(rows[0])             # phase 1 logs L1 only
  assert any({"train/d_loss", "train/g_adv"} <= set(row) for row in rows)  # phase 2 logs the GAN
  assert sorted(os.listdir(workdir / "samples")) == [f"step_{s:07d}.png" for s in (2, 4, 6)]
  grid = np.asarray(Image.open(workdir / "samples" / "step_0000006.png"))
  assert grid.shape[0] == 3 * 32  # gray | prediction | truth
  saved = json.load(open(workdir / "config.json"))
  assert saved["model"]["generator"] == "pix2pix_unet"


def test_tensorboard_gets_losses_scores_and_the_config(tiny_run):
  from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
  events = EventAccumulator(str(tiny_run[0] / "tensorboard"))
  events.Reload()
  assert {"train/g_recon", "train/d_loss", "eval/psnr", "eval/ssim"} <= set(events.Tags()["tensors"])
  assert "_hparams_/session_start_info" in events.PluginTagToContent("hparams")  # the config, once


def test_a_rerun_keeps_what_the_run_wrote(photos, tmp_path):
  """A finished run is left alone; another model is refused before anything is written; a
  changed held-out set restarts the best checkpoint instead of comparing unlike scores."""
  summary = train.train_and_evaluate(tiny_config(photos), str(tmp_path))
  final = tmp_path / "final_metrics.json"
  written, evals = final.read_bytes(), final.stat().st_mtime_ns
  assert train.train_and_evaluate(tiny_config(photos), str(tmp_path)) == pytest.approx(summary)
  assert final.read_bytes() == written and final.stat().st_mtime_ns == evals

  files = lambda: {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
  saved = files()
  with pytest.raises(ValueError, match="do not fit this config \\(changed: model.ngf; "):
    train.train_and_evaluate(tiny_config(photos, **{"model.ngf": 16}), str(tmp_path))
  assert files() == saved  # not even a TensorBoard event file
  train.train_and_evaluate(tiny_config(photos, total_steps=4), str(tmp_path))  # already past it
  assert files() == saved  # config.json still describes the checkpoints

  assert json.load(open(tmp_path / "best.json"))["step"] in (2, 4, 6)
  train.train_and_evaluate(tiny_config(photos, total_steps=8, eval_every=8, eval_max_images=4), str(tmp_path))
  best = json.load(open(tmp_path / "best.json"))
  assert best["step"] == 8 and best["value"] == pytest.approx(json.load(open(final))["psnr"])


def test_the_eta_counts_the_first_evals_compile_once(monkeypatch):
  """Steps of 0.1 s and an eval of 1 s every 10 steps, the first of which compiled for 30 s
  more: with 100 steps left the ETA is 16 s (the events so far per step so far; the truth is
  20 s), where counting the compile in every eval said 1m56s (a resumed demo-sized run said
  6 min for 1 left)."""
  clock = [0.0]
  monkeypatch.setattr(train.time, "time", lambda: clock[0])
  speed = train._Throughput(0)
  lines = []
  for step, eval_seconds in ((10, 31.0), (20, 1.0), (30, None)):
    clock[0] += 1.0  # ten steps
    lines.append(speed.report(step, step + 100, 8)[1])
    speed.next_window(step)
    if eval_seconds:
      clock[0] += eval_seconds
      speed.event(eval_seconds, evaluated=True)
  assert lines == ["80.0 img/s | ETA 0m10s", "80.0 img/s | ETA 2m45s", "80.0 img/s | ETA 0m16s"]


def test_the_end_line_is_written_before_final_metrics(photos, tmp_path, monkeypatch):
  """A kill between the two writes leaves the state a re-run completes (no final_metrics.json:
  the report is made again, with this segment's end); the other order left a run that counted
  as done with its segment never ended, so its time was never added up."""
  writes = []
  append, write_json = checkpoints.append_run_record, train.shards.write_json
  monkeypatch.setattr(checkpoints, "append_run_record", lambda w, r: writes.append(r["event"]) or append(w, r))
  monkeypatch.setattr(train.shards, "write_json", lambda p, o: writes.append(os.path.basename(p)) or write_json(p, o))
  train.train_and_evaluate(tiny_config(photos), str(tmp_path))
  assert writes[-2:] == ["end", "final_metrics.json"]
  os.remove(tmp_path / "final_metrics.json")  # killed there
  train.train_and_evaluate(tiny_config(photos), str(tmp_path))
  final = json.load(open(tmp_path / "final_metrics.json"))
  assert (final["segments"], final["segments_without_end"]) == (2, 0)


def test_an_eval_replayed_after_a_resume_logs_no_later_best(photos, tmp_path):
  """Killed after its eval at 8 but with its newest checkpoint at 4: the re-run evals 6 again,
  when best.json already holds what step 8 found; an uninterrupted run's curve at 6 never saw it."""
  config = tiny_config(photos, total_steps=8, checkpoint_every=4)
  train.train_and_evaluate(config, str(tmp_path))
  rows = lambda key: {r["step"]: r[key] for r in map(json.loads, open(tmp_path / "metrics.jsonl")) if key in r}
  first = rows("eval/best_psnr")
  shutil.rmtree(tmp_path / "checkpoints" / "8")
  os.remove(tmp_path / "final_metrics.json")
  train.train_and_evaluate(config, str(tmp_path))
  assert sorted(rows("eval/psnr")) == [2, 4, 6, 8]
  again = rows("eval/best_psnr")
  assert sorted(again) == [2, 4, 8] and again == {s: v for s, v in first.items() if s != 6}


def test_a_run_stopped_after_its_last_eval_logs_that_eval_once(photos, tmp_path):
  """Stopped (a preemption) between the last eval and final_metrics.json: the re-run scores the
  checkpoint again for final_metrics.json, but metrics.jsonl and TensorBoard keep one eval per
  step; stopped before that eval was logged, the re-run logs it."""
  from tensorboard.backend.event_processing import plugin_event_accumulator
  summary = train.train_and_evaluate(tiny_config(photos), str(tmp_path))
  eval_steps = lambda: [row["step"] for row in map(json.loads, open(tmp_path / "metrics.jsonl")) if "eval/psnr" in row]
  assert eval_steps() == [2, 4, 6]
  os.remove(tmp_path / "final_metrics.json")
  assert train.train_and_evaluate(tiny_config(photos), str(tmp_path)) == pytest.approx(summary)
  assert json.load(open(tmp_path / "final_metrics.json"))["psnr"] == pytest.approx(summary["psnr"])
  events = plugin_event_accumulator.EventAccumulator(str(tmp_path / "tensorboard"))
  events.Reload()
  assert eval_steps() == [e.step for e in events.Tensors("eval/psnr")] == [2, 4, 6]
  # Stopped before the eval was logged (its rows and picture absent): logged by the re-run.
  os.remove(tmp_path / "final_metrics.json")
  os.remove(tmp_path / "samples" / "step_0000006.png")
  with open(tmp_path / "metrics.jsonl") as f:
    rows = [line for line in f if json.loads(line)["step"] < 6 or "eval/psnr" not in line]
  (tmp_path / "metrics.jsonl").write_text("".join(rows))
  train.train_and_evaluate(tiny_config(photos), str(tmp_path))
  assert eval_steps() == [2, 4, 6] and (tmp_path / "samples" / "step_0000006.png").exists()


def _runs(workdir):
  return [json.loads(line) for line in open(workdir / "runs.jsonl")]


def test_each_run_of_the_command_is_recorded_and_final_metrics_says_how_long_and_on_what(photos, tmp_path, monkeypatch):
  """A run stopped by Ctrl-C at step 2, then resumed: runs.jsonl holds two starts and two ends;
  final_metrics.json the time of both and the environment of the second."""
  log_window = train._log_window

  def ctrl_c_at_2(run, window, step, speed):
    log_window(run, window, step, speed)
    if step == 2:
      os.kill(os.getpid(), signal.SIGINT)

  monkeypatch.setattr(train, "_log_window", ctrl_c_at_2)
  assert train.run(tiny_config(photos), str(tmp_path))[1] == signal.SIGINT
  monkeypatch.undo()
  assert not (tmp_path / "final_metrics.json").exists()
  train.train_and_evaluate(tiny_config(photos), str(tmp_path))

  records = _runs(tmp_path)
  assert [(r["event"], r["step"]) for r in records] == [("start", 0), ("end", 2), ("start", 2), ("end", 6)]
  assert [r["ended"] for r in records[1::2]] == ["signal", "complete"] and records[1]["signal"] == "SIGINT"
  times = [datetime.datetime.fromisoformat(r["time"]) for r in records]
  assert times == sorted(times) and all(t.utcoffset() == datetime.timedelta(0) for t in times)
  start = records[2]
  assert (start["command"], start["cwd"], start["total_steps"], start["config_changed"]) == (sys.orig_argv, os.getcwd(), 6, [])
  env = start["environment"]
  assert env["jax"] == jax.__version__ and env["device_count"] == jax.device_count()
  assert env["orbax_checkpoint"] == importlib.metadata.version("orbax-checkpoint")
  assert env["flax"] == importlib.metadata.version("flax") and env["colorjax"] == importlib.metadata.version("colorjax")
  assert env["dtype"] == models.compute_dtype(tiny_config(photos)).name  # "auto", resolved

  final = json.load(open(tmp_path / "final_metrics.json"))
  assert final["wall_seconds"] > 0 and final["wall_seconds"] == pytest.approx(
      sum(r["wall_seconds"] for r in records[1::2]), abs=0.11)
  assert (final["segments"], final["segments_without_end"], final["environment"]) == (2, 0, env)
  # Re-running the finished command trains nothing: no segment, and only the scores come back.
  assert not set(train.train_and_evaluate(tiny_config(photos), str(tmp_path))) & set(train.FINAL_RECORDS)
  assert _runs(tmp_path) == records


def test_a_workdir_from_before_runs_jsonl_resumes_and_a_line_cut_short_stays_apart(photos, tmp_path):
  train.train_and_evaluate(tiny_config(photos, total_steps=2), str(tmp_path))
  os.remove(tmp_path / "runs.jsonl")  # as colorjax left a workdir before the file
  train.train_and_evaluate(tiny_config(photos, total_steps=4), str(tmp_path))
  assert [(r["event"], r["step"]) for r in _runs(tmp_path)] == [("start", 2), ("end", 4)]
  assert _runs(tmp_path)[0]["config_changed"] == ["total_steps"]
  assert json.load(open(tmp_path / "final_metrics.json"))["segments"] == 1

  with open(tmp_path / "runs.jsonl", "a") as f:
    f.write('{"event": "start", "ti')  # a kill while the line was written
  before = (tmp_path / "runs.jsonl").read_text()
  train.train_and_evaluate(tiny_config(photos, total_steps=6), str(tmp_path))
  after = (tmp_path / "runs.jsonl").read_text()
  assert after.startswith(before + "\n")  # appended to, never rewritten
  records = checkpoints.read_run_records(str(tmp_path))
  assert [(r["event"], r["step"]) for r in records] == [("start", 2), ("end", 4), ("start", 4), ("end", 6)]
  final = json.load(open(tmp_path / "final_metrics.json"))
  assert final["segments"] == 2 and final["wall_seconds"] == pytest.approx(
      sum(r["wall_seconds"] for r in records[1::2]), abs=0.11)


def test_a_runs_jsonl_that_cannot_be_written_is_a_warning(photos, tmp_path, caplog):
  (tmp_path / "runs.jsonl").mkdir()  # not a file: opening it fails, even for root
  with caplog.at_level(logging.WARNING):
    train.train_and_evaluate(tiny_config(photos, total_steps=1, pretrain_steps=1), str(tmp_path))
  for event in ("start", "end"):
    assert f"could not add the run's {event} record to {tmp_path / 'runs.jsonl'}" in caplog.text
  final = json.load(open(tmp_path / "final_metrics.json"))
  assert final["step"] == 1 and final["wall_seconds"] > 0 and final["environment"]["jax"] == jax.__version__


@pytest.mark.parametrize("override, message", [
    ({"keep_checkpoints": 0}, "config.keep_checkpoints must be a positive integer"),
    ({"best_metric": "PSNR"}, "config.best_metric 'PSNR' is not one of psnr, ssim"),
    ({"eval_every": 0}, "config.eval_every"),
    ({"image_size": 8, "model.num_downs": 3}, "config.image_size must be at least 11 .the held-out SSIM's window., got 8"),
    ({"data.eval_fraction": 1.0}, "config.data.eval_fraction must be in \\[0, 1\\)"),
    ({"max_train_minutes": -1.0}, "config.max_train_minutes must not be negative"),
    ({"model.num_classes": 256, "model.discriminator": "none"}, "model.generator 'pix2pix_unet' predicts ab, not classes"),
    ({"model.num_classes": 256, "model.generator": "resnet_unet"}, "set model.discriminator = 'none'"),
    ({"model.num_classes": 313, "model.generator": "resnet_unet"}, "16 x 16 bins, so 0 .regress ab. or 256"),
    ({"model.num_classes": 256, "model.generator": "resnet_unet", "model.discriminator": "none",
      "loss.color_weighted": True}, "loss.color_weighted and loss.tv_weight are for models that regress ab"),
    ({"model.num_classes": 256, "model.generator": "resnet_unet", "model.discriminator": "none",
      "loss.rebalance_offset": 0.0}, "rebalance_offset must be > 0"),
    # Read first at the first eval: a typo ended the run there with no checkpoint, T 0 gave black.
    ({"model.num_classes": 256, "model.generator": "resnet_unet", "model.discriminator": "none",
      "model.decode": "bogus"}, "config.model.decode must be one of annealed_mean, argmax, got 'bogus'"),
    ({"model.num_classes": 256, "model.generator": "resnet_unet", "model.discriminator": "none",
      "model.temperature": 0.0}, "config.model.temperature must be > 0 .1: the mean; lower: bolder., got 0.0"),
    ({"model.num_classes": 256, "model.generator": "resnet_unet", "model.discriminator": "none",
      "model.prior_correction": 2.0}, "config.model.prior_correction must be in \\[0, 1\\], got 2.0"),
    ({"loss.reconstruction": "smooth_l1", "loss.smooth_l1_beta": 0.0}, "smooth_l1_beta must be > 0"),
    ({"loss.reconstruction": "l3"}, "config.loss.reconstruction must be one of l1, mse, smooth_l1, got 'l3'"),
    ({"image_size": 48}, "config.image_size 48 is not a multiple of 32, which model.generator 'pix2pix_unet' needs "
                         ".it halves the image 5 times.: try 64"),
    ({"optim.d.lr": -2e-4}, "config.optim.d.lr must not be negative"),
    ({"fid_weights": "/nowhere/pt_inception.pth"}, "config.fid_weights /nowhere/pt_inception.pth: no such file"),
    ({"model.encoder_weights": "/nowhere/r18.pth"}, "config.model.encoder_weights is set, but model.generator "
                                                    "'pix2pix_unet' has no ResNet encoder to load them into"),
    ({"seed": -1}, "config.seed must be an integer >= 0, got -1"),
    ({"data.stats_images": 0}, "config.data.stats_images must be an integer >= 1, got 0"),
    ({"colorize_checkpoint": "bestt"}, "config.colorize_checkpoint must be 'latest' or 'best', got 'bestt'"),
    ({"stop_on_plateau": True}, "config.stop_on_plateau needs config.patience > 0"),  # was silently off
    ({"keep_samples": -1}, "config.keep_samples must be an integer >= 0, got -1"),
    ({"tensorboard_samples": -100}, "config.tensorboard_samples must be an integer >= 0, got -100"),
    ({"dtype": "float61"}, "config.dtype 'float61' is not a float type"),  # found once the workdir is made
    ({"grad_accum_steps": 3}, "grad_accum_steps must be a positive integer that divides config.batch_size .8. "
                              "into micro-batches, got 3"),
    ({"grad_accum_steps": 0}, "grad_accum_steps must be a positive integer"),
    ({"model.resnet_depth": 50, "model.generator": "resnet_unet"}, "model.resnet_depth must be one of .18, 34., got 50"),
])
def test_bad_run_settings_are_refused_before_anything_is_written(photos, tmp_path, override, message):
  with pytest.raises(ValueError, match=message):
    train.train_and_evaluate(tiny_config(photos, **override), str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()


def test_fid_weights_that_are_not_pytorch_fids_are_refused_before_the_run_writes_its_records(photos, tmp_path):
  (tmp_path / "inception.pth").write_text("not a state dict")
  with pytest.raises(ValueError, match="inception.pth is not a readable .pth state dict"):
    train.train_and_evaluate(tiny_config(photos, fid_weights=str(tmp_path / "inception.pth"),
                                         **{"data.eval_fraction": 0.5}), str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()  # the workdir and checkpoints/ it made, empty, are removed again
  # One held-out photo: the first eval's FID would end the run, its steps lost with it.
  with pytest.raises(ValueError, match="config.fid_weights: FID needs at least 2 held-out photos, the eval set has 1"):
    train.train_and_evaluate(tiny_config(photos, fid_weights=str(tmp_path / "inception.pth")), str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()


def test_a_workdir_inside_the_photo_folder_or_where_none_can_be_made_is_refused(photos, tmp_path):
  """Its sample pictures would become training photos when the run resumes."""
  with pytest.raises(ValueError, match=f"workdir {photos}/run is inside config.data.train's photo folder {photos}: "):
    train.train_and_evaluate(tiny_config(photos), os.path.join(photos, "run"))
  assert not os.path.exists(os.path.join(photos, "run"))
  (tmp_path / "a_file").write_text("the user's")
  with pytest.raises(ValueError, match="--workdir .*a_file/run: cannot write there .Not a directory."):
    train.train_and_evaluate(tiny_config(photos), str(tmp_path / "a_file" / "run"))


def test_a_source_without_photos_leaves_no_workdir_behind(tmp_path):
  (tmp_path / "empty").mkdir()
  with pytest.raises(ValueError, match="has no image files \\(.jpg, .jpeg"):  # not "in split 'eval'"
    train.train_and_evaluate(tiny_config(str(tmp_path / "empty")), str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()


def test_a_config_json_colorjax_did_not_write_is_refused_not_overwritten(photos, tmp_path):
  (tmp_path / "config.json").write_text('{"foo": 1}')
  with pytest.raises(ValueError, match="config.json is not the config of a colorjax run"):
    train.train_and_evaluate(tiny_config(photos), str(tmp_path))
  assert (tmp_path / "config.json").read_text() == '{"foo": 1}' and os.listdir(tmp_path) == ["config.json"]
  with pytest.raises(ValueError, match="config.data.train is not set: pass --config.data.train=folder:PATH"):
    train.train_and_evaluate(tiny_config(photos, **{"data.train": ""}), str(tmp_path / "run"))


@pytest.mark.parametrize("args, message", [
    (["--config", "configs/nope.py"], "error: --config configs/nope.py: no such file; the shipped configs are classify_resnet18, demo,"),
    (["--config", "configs/demo.py", "--config.image_sise=32"], 'Did you mean "image_size"'),
    (["--config", "configs/demo.py:cpu"], "error: --config configs/demo.py:cpu: ValueError: unknown config variant 'cpu'"),
    (["--config", "configs/demo.py", "COLORJAX_COORDINATOR=localhost:1234"],
     "error: COLORJAX_COORDINATOR is set, so COLORJAX_NUM_PROCESSES and COLORJAX_PROCESS_ID must be too"),
])
def test_command_line_names_a_bad_config_in_one_line(args, message, tmp_path):
  env = {**os.environ, "PYTHONPATH": REPO, **dict(a.split("=", 1) for a in args if a.startswith("COLORJAX_"))}
  args = [a for a in args if not a.startswith("COLORJAX_")]
  run = subprocess.run([sys.executable, "-m", "colorjax.train", *args, "--workdir", str(tmp_path / "run")],
                       cwd=REPO, env=env, capture_output=True, text=True)
  assert run.returncode == 1 and message in run.stderr and "Traceback" not in run.stderr, run.stderr[-2000:]
  assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("source, message", [
    ("x = (", "'(' was never closed (mine.py, line 1)"),
    ("raise RuntimeError('no photos mounted')", "no photos mounted"),
    ("X = 1", "the file defines no get_config()"),
    ("def get_config():\n  return {'image_size': 64}",
     "get_config() must return an ml_collections.ConfigDict, not dict (start from colorjax.config.default_config())"),
])
@pytest.mark.parametrize("command", ["train", "bench step"])
def test_a_config_file_that_fails_to_load_is_named_in_one_line(source, message, command, tmp_path):
  (tmp_path / "mine.py").write_text(source)
  run = subprocess.run([sys.executable, "-m", *f"colorjax.{command}".split(), "--config", str(tmp_path / "mine.py"),
                        "--workdir", str(tmp_path / "run")], cwd=REPO, env={**os.environ, "PYTHONPATH": REPO},
                       capture_output=True, text=True)
  assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr[-2000:]
  assert run.stderr.rstrip().splitlines()[-1] == f"error: --config {tmp_path / 'mine.py'}: {message}"
  assert not (tmp_path / "run").exists()


def test_a_config_without_the_default_fields_is_refused_naming_them():
  with pytest.raises(ValueError, match=r"the config has no batch_size, best_metric, checkpoint_every, "
                     r"colorize_checkpoint and \d+ more fields: start get_config\(\) from colorjax.config.default_config"):
    config_lib.check_run_config(ml_collections.ConfigDict({"image_size": 64}))


def test_verbosity_1_shows_the_traceback_behind_an_error_line(tmp_path):
  """For a bug report: the one-line error hides where it came from unless asked."""
  run = subprocess.run([sys.executable, "-m", "colorjax.train", "--config", "configs/demo.py",
                        "--config.data.train=folder:" + str(tmp_path / "nowhere"), "--workdir", str(tmp_path / "run"),
                        "--verbosity=1"], cwd=REPO, env={**os.environ, "PYTHONPATH": REPO}, capture_output=True, text=True)
  assert run.returncode == 1 and "Traceback" in run.stderr and "sources.py" in run.stderr, run.stderr[-2000:]
  assert run.stderr.rstrip().splitlines()[-1].startswith("error: ")
  # A config that fails while the flags are parsed, before absl reached --verbosity.
  (tmp_path / "mine.py").write_text("x = (")
  run = subprocess.run([sys.executable, "-m", "colorjax.train", "--config", str(tmp_path / "mine.py"), "--verbosity=1"],
                       cwd=REPO, env={**os.environ, "PYTHONPATH": REPO}, capture_output=True, text=True)
  assert run.returncode == 1 and "Traceback" in run.stderr and "SyntaxError" in run.stderr, run.stderr[-2000:]
  assert run.stderr.rstrip().splitlines()[-1].startswith("error: --config ")


def test_a_bucket_workdir_is_refused_not_written_as_a_local_folder(photos, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  with pytest.raises(ValueError, match="gs://bucket/run: give a local path; mount a bucket with gcsfuse"):
    train.train_and_evaluate(tiny_config(photos), "gs://bucket/run")
  assert not os.listdir(tmp_path)


def test_a_separate_eval_set_leaves_all_of_data_train_for_training(photos, tmp_path, caplog):
  held_out = write_photos(str(tmp_path / "held_out"), n=3, seed=1)
  split = tiny_config(photos, **{"data.eval_fraction": 0.25})
  train_report, eval_report = train.resolve_data(split)
  assert len(train_report.files) + len(eval_report.files) == 16 and len(eval_report.files) > 0
  train_report, eval_report = train.resolve_data(tiny_config(photos, **{"data.eval_fraction": 0.25,
                                                                         "data.eval": f"folder:{held_out}"}))
  assert (len(train_report.files), len(eval_report.files)) == (16, 3)
  assert not [r for r in caplog.records if r.levelname == "WARNING"]
  # One inside the training folder is no held-out set: said (found 2026-12-02: it was not).
  inside = write_photos(str(tmp_path / "all" / "sub"), n=4, seed=2)
  train.resolve_data(tiny_config(str(tmp_path / "all"), **{"data.eval": f"folder:{inside}"}))
  assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [
      f"config.data.eval folder:{inside} shares photos with config.data.train folder:{tmp_path / 'all'}: the "
      "held-out scores, the best checkpoint and the plateau are measured on photos the run trains on; give a source "
      "outside it, or leave data.eval empty (data.eval_fraction holds out a share)"]


@pytest.mark.parametrize("overrides, message", [
    ({"data.train": "folder:{tmp}/nope"}, "config.data.train: image folder '{tmp}/nope' does not exist"),
    ({"data.eval": "folder:{tmp}/nope"}, "config.data.eval: image folder '{tmp}/nope' does not exist"),
    ({"data.train": "tfds:"}, "config.data.train: data source 'tfds:' names no dataset"),
    ({"data.eval_fraction": 1e-6}, "config.data.train: .* has no image files in split 'eval': .* puts every photo in "
                                   "the other split \\(raise config.data.eval_fraction, or set config.data.eval\\)$"),
    ({"data.eval_fraction": 0.999999}, "config.data.train: .* has no image files in split 'train': .* "
                                       "\\(lower config.data.eval_fraction\\)$"),
])
def test_a_bad_source_names_the_config_field_it_is_in(photos, tmp_path, overrides, message):
  with pytest.raises((ValueError, FileNotFoundError), match=f"^{message.format(tmp=tmp_path)}"):
    train.resolve_data(tiny_config(photos, **{k: v.format(tmp=tmp_path) if isinstance(v, str) else v
                                              for k, v in overrides.items()}))


def test_the_log_says_what_model_trains_with_its_parameter_counts(photos, tmp_path, caplog):
  from colorjax.models.pix2pix import PatchGAN, UNetGenerator
  count = lambda module, *inputs: sum(x.size for x in jax.tree.leaves(
      jax.eval_shape(lambda: module.init(jax.random.key(0), *inputs))["params"]))
  l, ab = jnp.zeros((1, 32, 32, 1)), jnp.zeros((1, 32, 32, 2))
  g, d = count(UNetGenerator(num_downs=5, ngf=8), l), count(PatchGAN(ndf=8), l, ab)
  with caplog.at_level(logging.INFO):
    train.train_and_evaluate(tiny_config(photos, total_steps=1, pretrain_steps=1, **{"dtype": "float32"}), str(tmp_path))
  assert (f"model: pix2pix_unet + patchgan, 32 px; G {g / 1e6:.2f} M parameters, D {d / 1e6:.2f} M parameters; "
          f"float32 compute, global batch 8 over 1 device\n") in caplog.text
  # the compile before that line is said, not a silence (13 s of make demo on 2 CPU cores)
  assert caplog.messages.index("initialising the weights (compiles first)") == next(
      i for i, m in enumerate(caplog.messages) if m.startswith("model: ")) - 1


def test_the_log_says_when_a_step_compiles_which_phase_each_window_trained_and_how_it_ended(photos, tmp_path, caplog):
  config = tiny_config(photos, total_steps=4, pretrain_steps=2, log_every=1, eval_every=4, checkpoint_every=4)
  with caplog.at_level(logging.INFO):
    train.train_and_evaluate(config, str(tmp_path))
  lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("step ")]
  expected = [r"step 1: compiling the pretrain step", r"step 1: compiled and ran in \d+\.\d s",
              r"step 1/4 \[pretrain\] g_recon=\S+ \| compiled",  # a window of compiling steps has no speed
              r"step 2/4 \[pretrain\] g_recon=\S+ \| \S+ img/s \| ETA \S+",
              r"step 3: compiling the gan step", r"step 3: compiled and ran in \d+\.\d s",
              r"step 3/4 \[gan\] d_loss=.* \| compiled", r"step 4/4 \[gan\] d_loss=.* \| \S+ img/s \| ETA \S+"]
  assert len(lines) == len(expected) and all(map(re.fullmatch, expected, lines)), lines
  best = json.load(open(tmp_path / "best.json"))
  assert re.fullmatch(rf"done at step 4/4 after 0m\d\ds of training over 1 run; best checkpoint: step "
                      rf"{best['step']} \(psnr {best['value']:.4g}\); held-out scores in "
                      rf"{re.escape(str(tmp_path / 'final_metrics.json'))}", [m for m in caplog.messages if m.startswith("done")][-1])


def test_a_run_resumes_with_another_number_of_data_workers(photos, tmp_path, caplog):
  """grain's saved position does not fit a pipeline with worker processes added or removed."""
  train.train_and_evaluate(tiny_config(photos, total_steps=2), str(tmp_path))
  with caplog.at_level(logging.WARNING):
    train.train_and_evaluate(tiny_config(photos, total_steps=4, **{"data.num_workers": 1}), str(tmp_path))
    # 1 -> 2 workers: grain itself would take this position and fail at the first batch (IndexError)
    train.train_and_evaluate(tiny_config(photos, **{"data.num_workers": 2}), str(tmp_path))
  assert caplog.text.count("photos are drawn in a new order") == 2
  final = json.load(open(tmp_path / "final_metrics.json"))
  assert (final["step"], final["complete"]) == (6, True)


@pytest.mark.parametrize("field, fields", [
    ("rebalance_offset", {"model.generator": "resnet_colorizer", "model.num_classes": 256}),
    ("smooth_l1_beta", {"loss.reconstruction": "smooth_l1"})])
def test_resuming_a_run_from_before_a_loss_field_says_how_to_keep_its_loss(photos, tmp_path, caplog, field, fields):
  fields = {**fields, "model.discriminator": "none"}
  train.train_and_evaluate(tiny_config(photos, total_steps=2, pretrain_steps=2, **fields), str(tmp_path))
  saved = json.load(open(tmp_path / "config.json"))
  del saved["loss"][field]  # as colorjax wrote it before the field
  json.dump(saved, open(tmp_path / "config.json", "w"))
  with caplog.at_level(logging.INFO):
    train.train_and_evaluate(tiny_config(photos, total_steps=4, pretrain_steps=4, **fields), str(tmp_path))
  # A field the record lacks is no change the user made: said apart, as the settings of a newer colorjax.
  assert "resuming with a changed config: pretrain_steps, total_steps\n" in caplog.text
  assert f"resuming a run from a colorjax without loss.{field}: taken as this config says" in caplog.text
  if field == "rebalance_offset":
    pixels = sum(json.load(open(tmp_path / "ab_histogram.json"))["counts"])
    assert f"--config.loss.rebalance_offset={1e5 / pixels!r} to keep it" in caplog.text
  else:
    assert "pass --config.loss.smooth_l1_beta=110 to keep it" in caplog.text


def test_max_train_minutes_stops_with_scores_and_a_checkpoint_and_a_rerun_trains_on(photos, tmp_path):
  budget = tiny_config(photos, max_train_minutes=1e-9, eval_every=4, checkpoint_every=4)
  saved = ocp.CheckpointManager(str(tmp_path / "checkpoints"))
  for stop in (1, 2):  # each run of the command trains one step past the last one's checkpoint
    train.train_and_evaluate(budget, str(tmp_path))
    saved.reload()
    assert saved.all_steps() == list(range(1, stop + 1))
    final = json.load(open(tmp_path / "final_metrics.json"))
    assert (final["step"], final["complete"]) == (stop, False) and np.isfinite(final["psnr"])
  best = json.load(open(tmp_path / "best.json"))
  assert best["step"] in (1, 2) and best["evals_since_best"] == 0  # off-schedule evals: no patience spent
  # ... and the log's best curves say what best.json does (found 2026-12-02: they did not)
  rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  last = [r for r in rows if f"eval/best_{best['metric']}" in r][-1]
  assert last[f"eval/best_{best['metric']}"] == pytest.approx(best["value"]) and last["eval/evals_since_best"] == 0
  train.train_and_evaluate(tiny_config(photos, eval_every=4, checkpoint_every=4), str(tmp_path))
  final = json.load(open(tmp_path / "final_metrics.json"))
  assert (final["step"], final["complete"]) == (6, True)


def test_a_save_cut_short_is_skipped_by_every_reader_and_saved_again(photos, tmp_path, caplog):
  """Without its commit_success.txt a step folder is a save that was killed (or is still being
  written by the hosts of a pod): resuming and colorizing take the step before it."""
  from colorjax import colorize
  config = tiny_config(photos, total_steps=4, pretrain_steps=4, **{"model.discriminator": "none"})
  train.train_and_evaluate(config, str(tmp_path))
  os.remove(tmp_path / "checkpoints" / "4" / "commit_success.txt")
  assert colorize.Colorizer.from_workdir(str(tmp_path), "latest").step == 2
  assert checkpoints.open_checkpoints(str(tmp_path / "checkpoints")).all_steps() == [2]
  assert json.load(open(tmp_path / "final_metrics.json"))["step"] == 4
  with caplog.at_level(logging.WARNING):
    train.train_and_evaluate(config, str(tmp_path))  # removes it, resumes at 2 and saves step 4 again
  assert f"removing {tmp_path / 'checkpoints' / '4'}: a save that was cut short" in caplog.text
  assert (tmp_path / "checkpoints" / "4" / "commit_success.txt").exists()
  assert colorize.Colorizer.from_workdir(str(tmp_path), "latest").step == 4


def test_max_train_minutes_on_the_last_step_finishes_normally(photos, tmp_path):
  train.train_and_evaluate(tiny_config(photos, total_steps=1, pretrain_steps=1, max_train_minutes=1e-9),
                           str(tmp_path))
  final = json.load(open(tmp_path / "final_metrics.json"))
  assert (final["step"], final["complete"]) == (1, True)
  assert sorted(os.listdir(tmp_path / "samples")) == ["step_0000001.png"]  # one eval, not two


def test_a_diverged_run_stops_with_a_clear_error_and_keeps_the_checkpoints_before_it(photos, tmp_path):
  """A learning rate of 1e10 makes the weights overflow to NaN within a step (a real divergence,
  nothing patched): the run stops at the first log; no checkpoint, best or sample is written."""
  train.train_and_evaluate(tiny_config(photos, total_steps=2), str(tmp_path))
  saved = lambda: {p: os.path.getmtime(p) for d in ("checkpoints", "best") for p in (tmp_path / d).rglob("*")}
  before = saved()
  with pytest.raises(train.DivergedError, match=r"diverged at step 4: .*g_recon became NaN.*steps 3-4.*optim.g.lr"):
    train.train_and_evaluate(tiny_config(photos, **{"optim.g.lr": 1e10}), str(tmp_path))
  assert ocp.CheckpointManager(str(tmp_path / "checkpoints")).all_steps() == [2]
  assert json.load(open(tmp_path / "best.json"))["step"] == 2
  assert sorted(os.listdir(tmp_path / "samples")) == ["step_0000002.png"]
  assert saved() == before  # the logs do show the NaN losses
  end = _runs(tmp_path)[-1]
  assert (end["event"], end["ended"], end["step"]) == ("end", "error", 4)
  assert end["error"].startswith("DivergedError: training diverged at step 4") and end["wall_seconds"] > 0


@pytest.mark.parametrize("eval_every", [2, 100])  # the gate before an eval, and before a save
def test_nan_weights_are_never_evaluated_or_saved(photos, tmp_path, eval_every):
  """The gate behind the loss check, for a run that logs less often than it evaluates or saves."""
  with pytest.raises(train.DivergedError, match="diverged at step 2: the weights are NaN"):
    train.train_and_evaluate(tiny_config(photos, log_every=100, eval_every=eval_every, **{"optim.g.lr": 1e10}),
                             str(tmp_path))
  assert not (tmp_path / "checkpoints").exists() or not os.listdir(tmp_path / "checkpoints")
  assert not os.listdir(tmp_path / "samples")


def test_metrics_jsonl_keeps_one_row_per_step_across_restarts(tmp_path):
  path = tmp_path / "metrics.jsonl"
  path.write_text('{"step": 2, "a": 1.0}\n{"step": 4, "a": 2.0}\n{"step": 6, "a"')  # killed mid-line
  writers.JsonlWriter(str(path), step=4).write_scalars(5, {"a": 3.0})  # resumed at checkpoint 4
  assert [json.loads(line)["step"] for line in open(path)] == [2, 4, 5]
  assert json.loads(path.read_text().splitlines()[-1])["time"] == pytest.approx(time.time(), abs=60)  # when
  writers.JsonlWriter(str(path), step=0).write_scalars(1, {"a": 4.0})  # killed before a checkpoint
  assert [json.loads(line)["step"] for line in open(path)] == [1]


def test_tensorboard_shows_one_value_per_step_across_restarts(tmp_path):
  """TensorBoard's server drops what runs before a resume logged after its checkpoint, as
  metrics.jsonl does: each run's event file begins with a restart marker."""
  from tensorboard.backend.event_processing import plugin_event_accumulator
  from tensorboard.util.tensor_util import make_ndarray as tf_make_ndarray
  runs = [(0, range(1, 5), 1.0),  # killed at step 4, after its checkpoint at 2
          (2, range(3, 7), 2.0),  # resumed at 2, killed at 6 before a checkpoint
          (2, range(3, 8), 3.0)]  # resumed at 2 again
  for i, (resumed_at, steps, value) in enumerate(runs):
    writer = writers.create_writer(str(tmp_path), True, resumed_at)
    for step in steps:
      writer.write_scalars(step, {"loss": value})
    writer.close()
    # TensorBoard reads a folder's files in name order: a time in seconds, then a per-process count
    # (each run of the trainer is its own process, seconds apart)
    new, = (tmp_path / "tensorboard").glob("events.out.tfevents.*")
    new.rename(new.with_name(f"run{i}.tfevents"))
  events = plugin_event_accumulator.EventAccumulator(str(tmp_path / "tensorboard"))
  events.Reload()
  shown = [(e.step, float(tf_make_ndarray(e.tensor_proto))) for e in events.Tensors("loss")]
  assert shown == [(1, 1.0), (2, 1.0), (3, 3.0), (4, 3.0), (5, 3.0), (6, 3.0), (7, 3.0)]
  assert [json.loads(line)["step"] for line in open(tmp_path / "metrics.jsonl")] == [1, 2, 3, 4, 5, 6, 7]


def test_tensorboard_reads_the_records_clus_tensorflow_writer_writes(tmp_path):
  """What TensorBoard's server reads from colorjax's writer equals what it reads from clu's
  SummaryWriter (TensorFlow's tf.summary) given the same calls: tags, plugins, steps, values,
  the pictures' pixels and the config in the HParams tab."""
  pytest.importorskip("tensorflow")
  from clu import metric_writers
  from tensorboard.backend.event_processing import plugin_event_accumulator
  from tensorboard.plugins.hparams import plugin_data_pb2
  from tensorboard.util.tensor_util import make_ndarray
  pictures = np.random.default_rng(0).integers(0, 256, (2, 6, 10, 3), dtype=np.uint8)

  def read(writer, folder):
    writer.write_hparams({"lr": 0.001, "model.generator": "resnet_unet", "data.flip": True, "total_steps": 300})
    for step in (1, 2, 3):
      writer.write_scalars(step, {"train/g_recon": 1 / step, "eval/evals_since_best": step})
    writer.write_images(3, {"samples": pictures})
    writer.close()
    events = plugin_event_accumulator.EventAccumulator(str(folder))
    events.Reload()
    hparams = plugin_data_pb2.HParamsPluginData.FromString(
        events.SummaryMetadata("_hparams_/session_start_info").plugin_data.content).session_start_info.hparams
    width, height, *pngs = make_ndarray(events.Tensors("samples")[0].tensor_proto)
    return ({tag: (events.SummaryMetadata(tag).plugin_data.plugin_name,
                   [(e.step, make_ndarray(e.tensor_proto).tolist()) for e in events.Tensors(tag)])
             for tag in events.Tags()["tensors"] if tag != "samples"},
            dict(hparams), (int(width), int(height)), [np.asarray(Image.open(io.BytesIO(png))) for png in pngs])

  theirs = read(metric_writers.SummaryWriter(str(tmp_path / "tf")), tmp_path / "tf")
  ours = read(writers.TensorBoardWriter(str(tmp_path / "ours")), tmp_path / "ours")
  assert ours[:3] == theirs[:3] and ours[2] == (10, 6)
  assert set(ours[0]) == {"_hparams_/session_start_info", "train/g_recon", "eval/evals_since_best"}
  np.testing.assert_array_equal(ours[3], theirs[3])
  np.testing.assert_array_equal(ours[3], pictures)


def test_tensorboard_sees_each_value_as_it_is_written(tmp_path):
  """For a TensorBoard watching a run: nothing waits in a buffer until the writer closes."""
  from tensorboard.backend.event_processing import plugin_event_accumulator
  writer = writers.create_writer(str(tmp_path), True)
  events = plugin_event_accumulator.EventAccumulator(str(tmp_path / "tensorboard"))
  for step in (1, 2):
    writer.write_scalars(step, {"train/g_recon": 0.5})
    events.Reload()
    assert [e.step for e in events.Tensors("train/g_recon")][-1] == step
  writer.close()


def test_a_failing_log_writer_is_dropped_and_a_sample_picture_is_whole_or_absent(tmp_path, caplog):
  class FullDisk:
    def write_scalars(self, step, scalars):
      raise OSError(28, "No space left on device")

  jsonl = writers.JsonlWriter(str(tmp_path / "metrics.jsonl"))
  writer = writers.MultiWriter([FullDisk(), jsonl])
  writer.write_scalars(1, {"a": 1.0})
  writer.write_scalars(2, {"a": 2.0})
  assert [json.loads(line)["step"] for line in open(tmp_path / "metrics.jsonl")] == [1, 2]
  assert sum("FullDisk failed (OSError: [Errno 28] No space left on device)" in r.message
             for r in caplog.records) == 1

  class Buggy:
    def write_scalars(self, step, scalars):
      raise TypeError("a bug, not the disk")

  with pytest.raises(TypeError, match="a bug"):
    writers.MultiWriter([Buggy()]).write_scalars(1, {})
  train._write_sample(np.zeros((8, 8, 3), np.uint8), str(tmp_path / "gone" / "step_0000002.png"))
  assert "could not write the sample picture" in caplog.text and not (tmp_path / "gone").exists()


def test_keeping_samples_deletes_only_colorjaxs_pictures_up_to_the_step_and_warns_when_it_cannot(
    tmp_path, monkeypatch, caplog):
  ours = [train._sample_name(s) for s in (2, 4, 6, 8, 10, 12)]
  users = ["step_2.png", "step_00000002.png", "step_0000004.PNG", "step_0000004.jpg", "my_step_0000006.png",
           ".step_0000006.png.colorjax.tmp", "notes.txt"]
  for name in ours + users:
    (tmp_path / name).write_bytes(name.encode())
  (tmp_path / "step_0000014.png").mkdir()  # not a file: left alone
  os.symlink(tmp_path / "notes.txt", tmp_path / "step_0000016.png")

  train._keep_samples(str(tmp_path), 8, 2, best_step=2)  # 10 and 12: a killed run's, written again
  left = lambda: sorted(n for n in os.listdir(tmp_path) if n not in users)
  assert left() == ["step_0000002.png", "step_0000006.png", "step_0000008.png", "step_0000010.png",
                    "step_0000012.png", "step_0000014.png", "step_0000016.png"]
  assert all((tmp_path / name).read_bytes() == name.encode() for name in users)

  remove = os.remove

  def remove_but_8(path):
    if "0000008" in path:
      raise PermissionError(13, "Permission denied")
    remove(path)

  monkeypatch.setattr(os, "remove", remove_but_8)
  with caplog.at_level(logging.WARNING):
    train._keep_samples(str(tmp_path), 12, 1, best_step=None)
  assert f"could not remove the sample picture {tmp_path / 'step_0000008.png'}" in caplog.text
  assert left() == ["step_0000008.png", "step_0000012.png", "step_0000014.png", "step_0000016.png"]


def test_tensorboard_gets_at_most_tensorboard_samples_pictures_spread_over_the_run():
  c = config_lib.default_config()  # 50 evals
  assert all(train._tensorboard_gets_sample(c, s) for s in range(1000, 50_001, 1000))
  c.total_steps = 1_000_000
  shown = [s for s in range(1000, c.total_steps + 1, 1000) if train._tensorboard_gets_sample(c, s)]
  assert len(shown) == 100 and shown[:2] == [10_000, 20_000] and shown[-1] == c.total_steps
  c.total_steps = 1_000_500  # the last step, off the schedule, too
  assert train._tensorboard_gets_sample(c, c.total_steps) and not train._tensorboard_gets_sample(c, 1_000_000)
  c.tensorboard_samples = 0
  assert all(train._tensorboard_gets_sample(c, s) for s in range(1000, 1_000_001, 1000))


def _sample_pictures(workdir):
  return sorted(n for n in os.listdir(workdir / "samples") if train._sample_step(n) is not None)


@pytest.fixture(scope="module")
def samples_run(photos, tmp_path_factory):
  """A run of 4 evals that keeps 2 sample pictures and shows 2 in TensorBoard, with a user's
  files in its samples folder."""
  workdir = tmp_path_factory.mktemp("samples_run")
  config = tiny_config(photos, total_steps=8, pretrain_steps=4, checkpoint_every=4, keep_samples=2,
                       tensorboard_samples=2)
  users = {"step_2.png": b"mine", "best.png": b"mine too", "step_0000002.jpg": b"and mine"}
  os.makedirs(workdir / "samples")
  for name, data in users.items():
    (workdir / "samples" / name).write_bytes(data)
  train.train_and_evaluate(config, str(workdir))
  return workdir, config, users


def test_a_run_keeps_the_newest_sample_pictures_and_the_bests_and_a_users_files(samples_run):
  workdir, _, users = samples_run
  best = json.load(open(workdir / "best.json"))["step"]
  assert _sample_pictures(workdir) == sorted({train._sample_name(s) for s in (6, 8, best)})
  assert sorted(os.listdir(workdir / "samples")) == sorted(_sample_pictures(workdir) + list(users))
  assert all((workdir / "samples" / name).read_bytes() == data for name, data in users.items())


def test_a_run_whose_last_eval_is_its_best_ends_without_the_best_before(photos, tmp_path, monkeypatch):
  """That eval keeps the best before it (the record is updated after the picture is written);
  the end of the run prunes again."""
  evaluate = train.Trainer.evaluate

  def rising(self, state, *args, **kwargs):  # a score that rises to the end, whatever the CPU's rounding
    summary, pred = evaluate(self, state, *args, **kwargs)
    return {**summary, "ssim": float(state.step) / 100}, pred

  monkeypatch.setattr(train.Trainer, "evaluate", rising)
  train.train_and_evaluate(tiny_config(photos, total_steps=8, pretrain_steps=4, keep_samples=1,
                                       best_metric="ssim"), str(tmp_path))
  assert json.load(open(tmp_path / "best.json"))["step"] == 8
  assert _sample_pictures(tmp_path) == ["step_0000008.png"]


def test_tensorboard_gets_the_sample_pictures_of_every_other_eval(samples_run):
  from tensorboard.backend.event_processing import plugin_event_accumulator
  from tensorboard.util.tensor_util import make_ndarray
  events = plugin_event_accumulator.EventAccumulator(str(samples_run[0] / "tensorboard"))
  events.Reload()
  assert [e.step for e in events.Tensors("samples")] == [4, 8]
  assert events.SummaryMetadata("samples").plugin_data.plugin_name == "images"
  # tf.summary.image's layout: width, height, then each picture as PNG
  width, height, png = make_ndarray(events.Tensors("samples")[-1].tensor_proto)
  on_disk = np.asarray(Image.open(samples_run[0] / "samples" / "step_0000008.png"))
  assert (int(width), int(height)) == (on_disk.shape[1], on_disk.shape[0])
  np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png))), on_disk)


def test_a_run_killed_after_an_eval_and_resumed_keeps_the_same_sample_pictures(samples_run, tmp_path, monkeypatch):
  """Killed while saving step 8, after eval 8 pruned the pictures; resumed from step 4, it writes
  6 and 8 again with the pictures of step 8 still there."""
  straight, config, _ = samples_run

  class Killed(Exception):
    pass

  save = train._save

  def killed_at_8(mgr, state, data_iterator):
    if int(state.step) == 8:
      raise Killed()
    save(mgr, state, data_iterator)

  monkeypatch.setattr(train, "_save", killed_at_8)
  with pytest.raises(Killed):
    train.train_and_evaluate(config, str(tmp_path))
  monkeypatch.undo()
  assert checkpoints.open_checkpoints(str(tmp_path / "checkpoints")).all_steps() == [4]
  assert "step_0000008.png" in _sample_pictures(tmp_path)
  train.train_and_evaluate(config, str(tmp_path))
  assert _sample_pictures(tmp_path) == _sample_pictures(straight)


def test_a_full_disk_ends_training_in_one_line_that_says_how_to_go_on(photos, tmp_path):
  full = tmp_path / "full_disk"
  full.mkdir()
  (full / "sitecustomize.py").write_text(textwrap.dedent("""\
      import orbax.checkpoint as ocp
      def save(self, step, *args, **kwargs):  # as tensorstore reports it
        raise ValueError("RESOURCE_EXHAUSTED: Error writing local file: No space left on device "
                         "[os_error_code='28'] [source locations=...]")
      ocp.CheckpointManager.save = save
      """))
  config = tiny_config(photos, total_steps=2, pretrain_steps=2)
  out, _ = _train_cli(config, tmp_path / "run", pythonpath=f"{full}{os.pathsep}{REPO}").communicate(timeout=600)
  assert out.strip().splitlines()[-1] == (
      f"error: [Errno 28] No space left on device while saving checkpoint 2: "
      f"'{tmp_path / 'run' / 'best' / '2'}'; once there is space, the same command resumes from the "
      "last checkpoint"), out[-3000:]
  assert "Traceback" not in out


def test_training_in_process_gives_back_the_signal_handlers(photos, tmp_path):
  def mine(signum, frame):  # e.g. a notebook kernel's Interrupt
    del signum, frame

  before, term = signal.signal(signal.SIGINT, mine), signal.getsignal(signal.SIGTERM)
  try:
    train.train_and_evaluate(tiny_config(photos, total_steps=1, pretrain_steps=1), str(tmp_path))
    assert signal.getsignal(signal.SIGINT) is mine and signal.getsignal(signal.SIGTERM) is term
  finally:
    signal.signal(signal.SIGINT, before)


@pytest.mark.parametrize("metric, values, best_step", [("psnr", [20.0, 21.0, 21.0, 20.5], 2),
                                                       ("mse", [500.0, 450.0, 450.0, 470.0], 2)])
def test_best_checkpoint_and_patience_survive_a_restart(photos, tmp_path, metric, values, best_step):
  config = tiny_config(photos, best_metric=metric, patience=2)
  best = checkpoints.BestCheckpoint(str(tmp_path), config)
  plateaus = [best.update({"w": np.full(3, step, np.float32)}, {metric: v}, step)
              for step, v in enumerate(values[:3], start=1)]
  # A run resumed from a checkpoint before step 3 (killed after its eval) counts on, and counts
  # the eval of step 3, which it runs again, once.
  best = checkpoints.BestCheckpoint(str(tmp_path), config)
  plateaus.append(best.update({"w": np.full(3, 3, np.float32)}, {metric: values[2]}, 3))
  plateaus.append(best.update({"w": np.full(3, 4, np.float32)}, {metric: values[3]}, 4))
  assert plateaus == [False, False, False, False, True]  # a tie is no new best
  record = json.load(open(tmp_path / "best.json"))
  assert record == {"metric": metric, "value": values[best_step - 1], "step": best_step, "evals_since_best": 2,
                    "last_eval": 4, "eval": {**record["eval"], "eval_max_images": config.eval_max_images}}
  kept = ocp.CheckpointManager(str(tmp_path / "best"))
  assert kept.all_steps() == [best_step]
  np.testing.assert_array_equal(kept.restore(best_step)["w"], np.full(3, best_step))

  # Another held-out eval (here more photos) starts a new record, whatever config.json says; the
  # best step scored again after a resume from before it replaces its checkpoint (orbax refused).
  config.eval_max_images += 1
  best = checkpoints.BestCheckpoint(str(tmp_path), config)
  assert best.record["value"] is None
  assert not best.update({"w": np.full(3, 7, np.float32)}, {metric: values[0]}, best_step)
  kept = ocp.CheckpointManager(str(tmp_path / "best"))
  assert best.record["step"] == best_step and kept.all_steps() == [best_step]
  np.testing.assert_array_equal(kept.restore(best_step)["w"], np.full(3, 7))  # the weights of the record


def test_a_run_stopped_on_a_plateau_stays_stopped_until_told_otherwise(tmp_path):
  # Flat photos and a learning rate of 0: the pixel accuracy is 0 at every eval, so the second
  # eval (step 4) is the first without a new best.
  (tmp_path / "flat").mkdir()
  for i in range(8):
    Image.fromarray(np.full((40, 40, 3), (200, 40 + 20 * i, 60), np.uint8)).save(tmp_path / "flat" / f"flat_{i}.png")
  config = tiny_config(str(tmp_path / "flat"), **{
      "model.generator": "resnet_colorizer", "model.num_classes": 256, "model.discriminator": "none",
      "pretrain_steps": 6, "best_metric": "pixel_accuracy", "patience": 1, "stop_on_plateau": True,
      "optim.g.lr": 0.0})
  run = tmp_path / "run"
  train.train_and_evaluate(config, str(run))
  final = json.load(open(run / "final_metrics.json"))
  assert (final["step"], final["complete"]) == (4, False)
  written = {p: os.path.getmtime(p) for p in run.rglob("*")}
  train.train_and_evaluate(config, str(run))  # e.g. a retry loop or a notebook's Run all
  assert {p: os.path.getmtime(p) for p in run.rglob("*")} == written
  # Preempted at that plateau's eval, after its checkpoint, before final_metrics.json: it trained
  # on to step 6 when resumed; now it finishes its report where an uninterrupted run stopped.
  os.remove(run / "final_metrics.json")
  train.train_and_evaluate(config, str(run))
  again = json.load(open(run / "final_metrics.json"))
  assert {k: again[k] for k in ("step", "complete", "psnr", "pixel_accuracy", "best")} == {
      k: final[k] for k in ("step", "complete", "psnr", "pixel_accuracy", "best")}
  assert _runs(run)[-1]["ended"] == "plateau"
  assert max(checkpoints.open_checkpoints(str(run / "checkpoints")).all_steps()) == 4  # none trained on
  config.stop_on_plateau = False
  train.train_and_evaluate(config, str(run))
  final = json.load(open(run / "final_metrics.json"))
  assert (final["step"], final["complete"]) == (6, True)


def test_eval_fraction_does_not_restart_the_best_of_a_run_with_its_own_eval_set(photos, tmp_path):
  config = tiny_config(photos, **{"data.eval": f"folder:{photos}"})
  checkpoints.BestCheckpoint(str(tmp_path), config).update({"w": np.zeros(3, np.float32)}, {"psnr": 20.0}, 2)
  config.data.eval_fraction = 0.5  # changes the training photos, not the held-out ones
  assert checkpoints.BestCheckpoint(str(tmp_path), config).record["value"] == 20.0
  config.eval_max_images += 1
  assert checkpoints.BestCheckpoint(str(tmp_path), config).record["value"] is None


def test_other_held_out_photos_restart_the_best_and_a_record_without_them_does_not(photos, tmp_path, caplog):
  config = tiny_config(photos)
  crops = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
  best = lambda images: checkpoints.BestCheckpoint(str(tmp_path), config, eval_crops=checkpoints.fingerprint(images))
  best(crops).update({"w": np.zeros(3, np.float32)}, {"psnr": 20.0}, 2)
  assert best(crops.copy()).record["value"] == 20.0
  assert best(crops[:3]).record["value"] is None
  assert "the held-out eval changed (held-out crops)" in caplog.text
  record = json.load(open(tmp_path / "best.json"))
  del record["eval"]["held-out crops"]  # as an older colorjax wrote it
  json.dump(record, open(tmp_path / "best.json", "w"))
  assert best(crops).record["value"] == 20.0


def test_gray_baseline_is_scored_like_scikit_image(photos, tmp_path):
  skmetrics = pytest.importorskip("skimage.metrics")
  from skimage import color as skcolor
  config = tiny_config(photos)
  trainer = train.Trainer(config)
  images = np.stack([np.asarray(Image.open(os.path.join(photos, f"photo_{i:02d}.png")))[:32, :32]
                     for i in range(3)])
  summary, _ = trainer.evaluate(trainer.init_state(), images)
  want = []
  for rgb in images:
    lab = skcolor.rgb2lab(rgb)
    lab[..., 1:] = 0
    gray = np.round(skcolor.lab2rgb(lab) * 255).astype(np.uint8)
    want.append((skmetrics.peak_signal_noise_ratio(rgb, gray, data_range=255),
                 skmetrics.structural_similarity(rgb, gray, channel_axis=-1, data_range=255,
                                                 gaussian_weights=True, sigma=1.5,
                                                 use_sample_covariance=False)))
  assert summary["gray_psnr"] == pytest.approx(np.mean([w[0] for w in want]), abs=0.05)
  assert summary["gray_ssim"] == pytest.approx(np.mean([w[1] for w in want]), abs=2e-3)


def test_pretraining_then_gan_losses_go_down_on_a_fixed_batch(photos):
  config = tiny_config(photos, **{"optim.g.lr": 1e-3})
  trainer = train.Trainer(config)
  state = trainer.init_state()
  batch = np.stack([np.asarray(Image.open(os.path.join(photos, f"photo_{i:02d}.png")))[:32, :32]
                    for i in range(8)])
  losses = []
  for _ in range(30):
    state, m = trainer.step(state, batch, _)
    losses.append(float(m["g_recon"]))
  assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
  config.pretrain_steps = 0
  state, m = trainer.gan_step(state, jax.make_array_from_process_local_data(trainer.data_sharding, batch))
  assert set(m) == {"g_loss", "g_adv", "g_recon", "d_loss"}


def _fixed_batch(photos):
  return np.stack([np.asarray(Image.open(os.path.join(photos, f"photo_{i:02d}.png")))[:32, :32] for i in range(8)])


def _micro_config(photos, k, **overrides):
  """The tiny U-Net without dropout, so micro-batches differ only by their photos; float32, so
  the step's sums are compared, not an AMX CPU's bfloat16 rounding."""
  return tiny_config(photos, grad_accum_steps=k, dtype="float32", **{"model.dropout": 0.0, **overrides})


def test_micro_batches_update_with_the_mean_of_their_gradients(photos):
  """grad_accum_steps=2: Adam's first moment after one step is (1 - b1) x the mean of the two
  micro-batches' gradients (rows 0, 2, ... and 1, 3, ...), each taken by hand with batch norm
  over that micro-batch alone, and the running statistics go through both in turn."""
  config = _micro_config(photos, 2)
  trainer = train.Trainer(config)
  state, batch = trainer.init_state(), _fixed_batch(photos)
  new, m = trainer.step(jax.tree.map(jnp.copy, state), batch, 0)
  @jax.jit
  @functools.partial(jax.value_and_grad, has_aux=True)
  def loss_fn(params, stats, micro):
    l, ab = color.rgb_uint8_to_model(micro)
    pred, stats = train._apply_train(trainer.generator, params, stats, l)
    return train.reconstruction_loss(config, pred, ab, None), stats

  grads, stats, losses = [], state.g_stats, []
  for micro in (batch[0::2], batch[1::2]):
    (loss, stats), g = loss_fn(state.g_params, stats, micro)
    grads.append(g)
    losses.append(float(loss))
  mu = new.g_opt[0].mu
  for got, g0, g1 in zip(jax.tree.leaves(mu), *map(jax.tree.leaves, grads)):
    want = (1 - config.optim.g.b1) * (np.asarray(g0) + np.asarray(g1)) / 2
    # float32 sums in another order inside the jitted step: <= 1e-6 of a layer's gradient (its
    # norm); the mean over the two halves of the batch, or over the whole batch, is 70-130 % off
    assert np.linalg.norm(got - want) < 1e-2 * np.linalg.norm(want)
  for got, want in zip(jax.tree.leaves(new.g_stats), jax.tree.leaves(stats)):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
  assert float(m["g_recon"]) == pytest.approx(np.mean(losses), rel=1e-5)
  assert int(new.step) == 1


def test_two_equal_micro_batches_train_as_one_batch_of_them(photos):
  """Pretraining and the GAN step with grad_accum_steps=2 on a batch whose rows come in equal
  pairs (so both micro-batches are the same 8 photos) move the weights and optimiser states as
  grad_accum_steps=1 on those 8 photos, with its losses: D's update, then G's against it, each once."""
  batch = _fixed_batch(photos)
  results = []
  for k, rgb in ((1, batch), (2, np.repeat(batch, 2, axis=0))):
    config = _micro_config(photos, k, batch_size=len(rgb), pretrain_steps=1)
    trainer = train.Trainer(config)
    state, logged = trainer.init_state(), []
    start = jax.device_get((state.g_params, state.d_params))
    for step in range(2):  # one pretraining step, one GAN step
      state, m = trainer.step(state, rgb, step)
      logged.append({name: float(v) for name, v in m.items()})
    moved = jax.tree.map(np.subtract, jax.device_get((state.g_params, state.d_params)), start)
    results.append((jax.tree.leaves((moved, jax.device_get((state.g_opt, state.d_opt)))), logged))
  (one, logged1), (two, logged2) = results
  # float32 sums in another order: <= 5e-5 of a layer's update; the two halves of the batch
  # as micro-batches instead (photos 0-3 twice each, then 4-7) are 50-120 % off
  for a, b in zip(one, two):
    assert np.linalg.norm(a - b) <= 1e-2 * np.linalg.norm(a)
  for a, b in zip(logged1, logged2):
    assert a.keys() == b.keys() and all(a[k] == pytest.approx(b[k], rel=1e-4) for k in a)


def test_the_weight_average_warms_up_as_tensorflows_and_is_what_inference_uses(photos):
  config = tiny_config(photos, ema_decay=0.5, total_steps=12)
  trainer = train.Trainer(config)
  state, batch = trainer.init_state(), _fixed_batch(photos)
  expected = jax.tree.map(np.asarray, state.g_params)  # starts at the initial weights
  for t in range(12):
    state, _ = trainer.step(state, batch, t)
    decay = min(0.5, (1 + t) / (10 + t))  # ExponentialMovingAverage(num_updates=t): capped from t = 9
    expected = jax.tree.map(lambda e, p: decay * e + (1 - decay) * np.asarray(p), expected, state.g_params)
  jax.tree.map(lambda want, got: np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6), expected, state.g_ema)
  assert train.inference_fields(state) == ("g_ema", "g_stats")
  assert not np.allclose(jax.tree.leaves(state.g_ema)[0], jax.tree.leaves(state.g_params)[0])


def test_a_run_resumed_from_a_checkpoint_averages_its_weights_as_one_that_was_not(photos, tmp_path):
  """The weight average, the step its warm-up counts and Adam's moments come back from the
  checkpoint: 4 steps, save, restore into a fresh state, 4 more equal 8 straight; and what
  inference restores of the checkpoint is the average the trainer held."""
  config = tiny_config(photos, ema_decay=0.5, total_steps=8, pretrain_steps=8)
  trainer, batch = train.Trainer(config), _fixed_batch(photos)
  state = trainer.init_state()
  for t in range(8):
    state, _ = trainer.step(state, batch, t)
    if t == 3:
      at_4 = jax.device_get(state)
  mgr = checkpoints.open_checkpoints(str(tmp_path / "checkpoints"), max_to_keep=2)
  mgr.save(4, args=ocp.args.Composite(state=ocp.args.StandardSave(at_4)))
  resumed = checkpoints.restore_state(mgr, trainer.init_state())
  assert int(resumed.step) == 4
  reader = checkpoints.open_checkpoints(str(tmp_path / "checkpoints"))  # as colorize opens them
  fields = checkpoints.restore_fields(reader, resumed, 4, train.inference_fields(resumed))
  for got, want in zip(jax.tree.leaves(fields), jax.tree.leaves((at_4.g_ema, at_4.g_stats))):
    np.testing.assert_array_equal(got, want)
  for t in range(4, 8):
    resumed, _ = trainer.step(resumed, batch, t)
  for got, want in zip(jax.tree.leaves(jax.device_get(resumed)), jax.tree.leaves(jax.device_get(state))):
    np.testing.assert_array_equal(got, want)


def test_a_gan_step_is_pix2pixs_optimize_parameters(photos):
  """D learns real = 1 and the detached fake = 0; then G, against the updated D, wants its fake
  called real, plus l1_weight x L1 (torch's BCEWithLogitsLoss and L1Loss as the reference)."""
  torch = pytest.importorskip("torch")
  config = tiny_config(photos, pretrain_steps=0)
  trainer = train.Trainer(config)
  state = trainer.init_state()
  rgb = jax.make_array_from_process_local_data(trainer.data_sharding, _fixed_batch(photos))
  new, m = trainer.gan_step(jax.tree.map(jnp.copy, state), rgb)  # the step donates its input
  l, ab = color.rgb_uint8_to_model(rgb)
  rng = jax.random.fold_in(jax.random.key(config.seed), state.step)
  fake, _ = train._apply_train(trainer.generator, state.g_params, state.g_stats, l, rng=rng)
  d = lambda params, ab_: train._apply_train(trainer.discriminator, params, state.d_stats, l, ab_)[0]
  t = lambda x: torch.from_numpy(np.array(x, np.float32))
  bce = torch.nn.BCEWithLogitsLoss()
  real_logits, fake_logits = t(d(state.d_params, ab)), t(d(state.d_params, fake))
  d_loss = 0.5 * (bce(real_logits, torch.ones_like(real_logits)) + bce(fake_logits, torch.zeros_like(fake_logits)))
  assert float(m["d_loss"]) == pytest.approx(float(d_loss), rel=1e-4)
  fooled = t(d(new.d_params, fake))  # the updated D
  assert float(m["g_adv"]) == pytest.approx(float(bce(fooled, torch.ones_like(fooled))), rel=1e-4)
  assert float(m["g_recon"]) == pytest.approx(float(torch.nn.L1Loss()(t(fake), t(ab))), rel=1e-4)
  assert float(m["g_loss"]) == pytest.approx(float(m["g_adv"]) + config.loss.l1_weight * float(m["g_recon"]), rel=1e-5)


EIGHT_DEVICES = textwrap.dedent("""
    import sys, numpy as np, jax
    from PIL import Image
    sys.path.insert(0, {tests!r})
    from test_train import tiny_config
    from colorjax import train
    assert jax.device_count() == 8
    config = tiny_config({photos!r}, total_steps=4, pretrain_steps=2)  # dropout on, BN on
    config.dtype = "float32"  # not an AMX CPU's bfloat16 operands, whose rounding amplifies the noise below
    batch = np.stack([np.asarray(Image.open(f"{photos}/photo_{{i:02d}}.png"))[:32, :32] for i in range(8)])
    results = []
    for devices in (jax.devices()[:1], jax.devices()):
      trainer = train.Trainer(config, devices)
      state, losses = trainer.init_state(), []
      for step in range(4):
        state, m = trainer.step(state, batch, step)
        losses.append({{k: float(v) for k, v in m.items()}})
        if step == 1:  # the end of the L1 phase
          weights = jax.device_get((state.g_params, state.g_stats))
      results.append((losses, weights))
    (l1, w1), (l8, w8) = results
    # The sharded sums run in another order (~1e-7 apart); Adam's first GAN updates divide
    # near-zero gradients by their own size, which grows that to ~6e-4 in the last losses
    # (and ~1e-3 in single weights) on an Intel Xeon (2026-11-30). A sharding error
    # (per-device batch norm) is ~1e-1.
    for a, b in zip(l1, l8):
      for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=2e-3 if "d_loss" in a else 1e-4, atol=1e-5)
    # Weights after the L1 phase, where nothing amplifies that noise.
    for a, b in zip(jax.tree.leaves(w1), jax.tree.leaves(w8)):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    print("SAME", len(jax.tree.leaves(w1)))
""")


def test_eight_devices_give_the_same_losses_and_weights_as_one(photos):
  script = EIGHT_DEVICES.format(tests=os.path.dirname(__file__), photos=photos)
  env = {**os.environ, "PYTHONPATH": REPO, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
  out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
  assert "SAME" in out.stdout, out.stdout[-2000:] + out.stderr[-4000:]


def test_a_run_trained_on_four_devices_colorizes_on_one(photos, tmp_path):
  """Inference restores onto its own device: a pod's or a GPU box's model loads on a laptop."""
  assert jax.device_count() != 4
  config = tiny_config(photos, total_steps=2, pretrain_steps=2)
  run = _train_cli(config, tmp_path, env={"XLA_FLAGS": "--xla_force_host_platform_device_count=4"})
  out, _ = run.communicate(timeout=600)
  assert run.returncode == 0 and "devices: 4 x" in out, out[-3000:]
  assert "oneDNN" not in out  # TensorFlow's notice about ops it never runs here (it writes TensorBoard's files)
  gray = np.asarray(Image.open(os.path.join(photos, "photo_00.png")).convert("L"))
  for checkpoint in ("latest", "best"):
    colorizer = Colorizer.from_workdir(str(tmp_path), checkpoint)
    assert colorizer.step == 2
    assert all(x.sharding.device_set == {jax.local_devices()[0]} for x in jax.tree.leaves(colorizer.variables))
    assert colorizer(gray).shape == gray.shape + (3,)


def test_a_device_out_of_memory_is_one_line_naming_what_to_lower(photos, tmp_path):
  """XLA's RESOURCE_EXHAUSTED at the first step, as a GPU gives for a batch it cannot hold: here a
  real one, from a 16 TB buffer asked of the CPU where the step puts its batch on the devices."""
  config = tiny_config(photos)
  script = textwrap.dedent(f"""
      import runpy, sys
      import jax, jax.numpy as jnp
      jax.make_array_from_process_local_data = lambda *args: jnp.zeros((2 ** 42,), jnp.float32).block_until_ready()
      sys.argv = ["train", "--config", {os.path.join(REPO, "configs/demo.py")!r}, "--workdir", {str(tmp_path / "run")!r},
                  *{_cli_overrides(config)!r}]
      runpy.run_module("colorjax.train", run_name="__main__")""")
  run = subprocess.run([sys.executable, "-c", script], cwd=REPO, env={**os.environ, "PYTHONPATH": REPO},
                       capture_output=True, text=True, timeout=600)
  assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr[-3000:]
  assert run.stderr.splitlines()[-1] == (
      "error: out of memory on cpu: RESOURCE_EXHAUSTED: Out of memory allocating 17592186044416 bytes; lower "
      "config.batch_size (now 8 over 1 device) or config.image_size (now 32), or raise config.grad_accum_steps "
      "(now 1) to train the same batch in micro-batches, and run again: a run with a checkpoint resumes from it")


def test_a_batch_the_devices_cannot_share_is_refused_and_leaves_no_workdir(photos, tmp_path):
  run = _train_cli(tiny_config(photos), tmp_path / "run", env={"XLA_FLAGS": "--xla_force_host_platform_device_count=3"})
  out, _ = run.communicate(timeout=600)
  assert run.returncode == 1 and out.rstrip().splitlines()[-1] == (
      "error: config.batch_size=8 must be a multiple of the 3 devices"), out[-3000:]
  assert not (tmp_path / "run").exists()


def _wait_for_checkpoint(proc, workdir, step, timeout=300):
  deadline = time.time() + timeout
  while not os.path.exists(os.path.join(workdir, "checkpoints", str(step), "commit_success.txt")):
    assert proc.poll() is None, proc.stdout.read()[-3000:]
    assert time.time() < deadline, "no checkpoint in time"
    time.sleep(0.2)


def _tensorboard_steps(workdir, tag="train/g_recon"):
  """The steps TensorBoard's server shows for `tag`."""
  from tensorboard.backend.event_processing import plugin_event_accumulator
  events = plugin_event_accumulator.EventAccumulator(str(workdir / "tensorboard"))
  events.Reload()
  return [e.step for e in events.Tensors(tag)]


def test_sigkill_then_resume_gives_the_same_final_weights(photos, tmp_path):
  config = tiny_config(photos, total_steps=8, pretrain_steps=4, keep_samples=2)
  straight, killed = tmp_path / "straight", tmp_path / "killed"
  assert _train_cli(config, straight).wait(timeout=600) == 0

  proc = _train_cli(config, killed)
  _wait_for_checkpoint(proc, str(killed), 2)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  resumed = _train_cli(config, killed)
  out, _ = resumed.communicate(timeout=600)
  assert resumed.returncode == 0, out[-3000:]
  assert "resumed from" in out

  step_a, a = _final_params(str(straight), config)
  step_b, b = _final_params(str(killed), config)
  assert step_a == step_b == 8
  logged = lambda run: [json.loads(line)["step"] for line in open(run / "metrics.jsonl")]
  assert logged(killed) == logged(straight)  # the steps trained twice are logged once
  assert [r["event"] for r in _runs(killed)] == ["start", "start", "end"]  # SIGKILL leaves no end
  assert json.load(open(killed / "final_metrics.json"))["segments_without_end"] == 1
  assert _sample_pictures(killed) == _sample_pictures(straight)
  assert _tensorboard_steps(killed) == _tensorboard_steps(straight)  # and shown once
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)


def test_sigterm_saves_a_checkpoint_and_exits_cleanly_and_a_second_run_is_refused(photos, tmp_path):
  config = tiny_config(photos, total_steps=10 ** 6, checkpoint_every=1000, eval_every=1000)
  proc = _train_cli(config, tmp_path)
  deadline = time.time() + 300
  while not os.path.exists(tmp_path / "metrics.jsonl"):  # the first logged step
    assert proc.poll() is None and time.time() < deadline
    time.sleep(0.2)
  second = _train_cli(config, tmp_path)  # e.g. the same command typed in another terminal
  out, _ = second.communicate(timeout=300)
  assert second.returncode == 1 and f"error: another training is running in {tmp_path}" in out, out[-3000:]
  assert proc.poll() is None  # the first one trains on
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=300)
  assert proc.returncode == 128 + signal.SIGTERM, out[-3000:]  # a scheduler sees it did not finish
  assert "stopped by signal" in out
  steps = ocp.CheckpointManager(str(tmp_path / "checkpoints")).all_steps()
  assert steps and 0 < max(steps) < 1000
  start, end = _runs(tmp_path)  # none of the refused second command
  assert (start["step"], end["step"], end["ended"], end["signal"]) == (0, max(steps), "signal", "SIGTERM")
  assert start["command"][1:3] == ["-m", "colorjax.train"]  # as typed, not train.py's path
  assert start["command"][start["command"].index("--workdir") + 1] == str(tmp_path)


def _children(pid):
  found = []
  for task in os.listdir(f"/proc/{pid}/task"):
    with open(f"/proc/{pid}/task/{task}/children") as f:
      found += [int(c) for c in f.read().split()]
  return found


def _alive(pid):
  try:
    with open(f"/proc/{pid}/stat") as f:
      return f.read().rsplit(")", 1)[1].split()[0] != "Z"
  except FileNotFoundError:
    return False


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="reads /proc (Linux)")
def test_data_workers_exit_when_the_trainer_is_killed(photos, tmp_path):
  config = tiny_config(photos, total_steps=1000, checkpoint_every=1000, eval_every=1000)
  config.data.num_workers = 1
  proc = _train_cli(config, tmp_path)
  deadline = time.time() + 300
  while not os.path.exists(tmp_path / "metrics.jsonl"):  # training, so the worker runs
    assert proc.poll() is None and time.time() < deadline
    time.sleep(0.2)
  workers = _children(proc.pid)
  assert workers
  proc.kill()  # SIGKILL, as the OOM killer would: the trainer cannot tell its workers
  proc.communicate(timeout=60)
  deadline = time.time() + 30
  while any(map(_alive, workers)):
    assert time.time() < deadline, [w for w in workers if _alive(w)]
    time.sleep(0.2)


def test_ctrl_c_while_setting_up_stops_cleanly_and_says_so(photos, tmp_path):
  proc = _train_cli(tiny_config(photos, total_steps=1000), tmp_path)
  lines = []
  for line in proc.stdout:  # the handler is in place once the run logs its devices
    lines.append(line)
    if "devices:" in line:
      proc.send_signal(signal.SIGINT)
      break
  out = "".join(lines) + proc.communicate(timeout=300)[0]
  assert proc.returncode == 128 + signal.SIGINT and "Traceback" not in out, out[-3000:]
  assert "SIGINT: stopping at the next step boundary, with a checkpoint once a step has run" in out
  assert "stopped by signal" in out
  # Nothing left that a later command could take for a run: colorize would say it had checkpoints.
  assert os.listdir(tmp_path) == [], os.listdir(tmp_path)


def without_tensorflow(folder, packages=("tensorflow",)) -> str:
  """A PYTHONPATH for a Python that cannot import TensorFlow (or other top-level `packages`), as
  on the GPU images (a sitecustomize.py written in `folder`)."""
  os.makedirs(folder, exist_ok=True)
  with open(os.path.join(folder, "sitecustomize.py"), "w") as f:
    f.write(f"PACKAGES = {tuple(packages)!r}\n" + textwrap.dedent("""\
        import importlib.machinery, sys
        class PathFinderWithoutTensorFlow(importlib.machinery.PathFinder):
          @classmethod
          def find_spec(cls, name, path=None, target=None):
            if name.split(".")[0] in PACKAGES:
              return None  # as if not installed
            return super().find_spec(name, path, target)
        sys.meta_path = [PathFinderWithoutTensorFlow if f is importlib.machinery.PathFinder else f
                         for f in sys.meta_path]
        """))
  return f"{folder}{os.pathsep}{REPO}"


def test_trains_and_logs_to_tensorboard_where_tensorflow_cannot_be_imported(photos, tmp_path):
  """As on the GPU images, which have TensorBoard but no TensorFlow: everything works."""
  workdir = tmp_path / "run"
  proc = _train_cli(tiny_config(photos), workdir, pythonpath=without_tensorflow(tmp_path / "no_tf"))
  out, _ = proc.communicate(timeout=600)
  assert proc.returncode == 0, out[-3000:]
  assert "TensorBoard logging off" not in out
  assert json.load(open(workdir / "final_metrics.json"))["step"] == 6
  assert [json.loads(line)["step"] for line in open(workdir / "metrics.jsonl")][-1] == 6
  assert _tensorboard_steps(workdir) == [2, 4, 6]
  assert sorted(os.listdir(workdir / "samples"))[-1] == "step_0000006.png"


def test_without_tensorboard_a_run_logs_to_metrics_jsonl_and_says_so(tmp_path):
  code = textwrap.dedent("""\
      import os
      import numpy as np
      from colorjax import writers
      os.mkdir("run")
      w = writers.create_writer("run", True)
      w.write_hparams({"lr": 0.1})
      w.write_scalars(1, {"train/loss": 0.5})
      w.write_images(1, {"samples": np.zeros((1, 4, 4, 3), np.uint8)})
      w.close()
      """)
  env = {**os.environ, "PYTHONPATH": without_tensorflow(tmp_path / "no_tb", ("tensorflow", "tensorboard"))}
  run = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True)
  assert run.returncode == 0, run.stderr[-3000:]
  assert ("TensorBoard logging off (No module named 'tensorboard'); metrics go to the console and metrics.jsonl"
          in run.stderr)
  assert os.listdir(tmp_path / "run") == ["metrics.jsonl"]
  assert [json.loads(line)["train/loss"] for line in open(tmp_path / "run" / "metrics.jsonl")] == [0.5]


def test_fid_is_tracked_at_eval_with_a_stand_in_feature_network(photos):
  from colorjax import fid
  trainer = train.Trainer(tiny_config(photos))
  images = np.stack([np.asarray(Image.open(os.path.join(photos, f"photo_{i:02d}.png")))[:32, :32]
                     for i in range(8)])
  projection = np.random.default_rng(0).normal(size=(32 * 32 * 3, 6))
  features = lambda rgb: (rgb.reshape(len(rgb), -1) / 255.0) @ projection  # a random linear "network"
  state = trainer.init_state()
  summary, preds = trainer.evaluate(state, images, features)
  assert len(preds) == len(images)  # one batch holds every image here
  fake, real = features(preds), features(images)
  want = fid.frechet_distance(fake.mean(0), np.cov(fake, rowvar=False), real.mean(0), np.cov(real, rowvar=False))
  assert summary["fid"] == pytest.approx(want, rel=1e-6)
  # The training loop passes the real images' statistics, computed once (here 3 at a time).
  again, _ = trainer.evaluate(state, images, features, fid.image_stats(features, images, 3))
  assert again["fid"] == pytest.approx(want, rel=1e-6)


def test_config_json_names_the_photos_by_absolute_path(photos, tmp_path, monkeypatch, caplog):
  """So that resuming from another directory trains and scores on the same photos, and does
  not count it as a changed held-out eval (which would drop the best checkpoint)."""
  monkeypatch.chdir(os.path.dirname(photos))
  config = tiny_config(os.path.basename(photos), total_steps=1, pretrain_steps=1)
  train.train_and_evaluate(config, str(tmp_path / "run"))
  assert json.load(open(tmp_path / "run" / "config.json"))["data"]["train"] == f"folder:{photos}"
  assert config.data.train == f"folder:{os.path.basename(photos)}"  # the caller's config is left alone
  monkeypatch.chdir(tmp_path)
  with caplog.at_level("WARNING"):
    train.train_and_evaluate(tiny_config(photos, total_steps=2, pretrain_steps=2), str(tmp_path / "run"))
  assert "changed config: pretrain_steps, total_steps\n" in caplog.text and "eval changed" not in caplog.text
  # A run from before sources were recorded absolute: its relative path, from where it was started.
  for name in ("config.json", "best.json"):
    record = json.load(open(tmp_path / "run" / name))
    (record if name == "config.json" else record["eval"])["data" if name == "config.json" else "data.train"] = (
        {**record["data"], "train": f"folder:{os.path.basename(photos)}"} if name == "config.json"
        else f"folder:{os.path.basename(photos)}")
    json.dump(record, open(tmp_path / "run" / name, "w"))
  monkeypatch.chdir(os.path.dirname(photos))
  caplog.clear()
  with caplog.at_level("WARNING"):
    train.train_and_evaluate(tiny_config(photos, total_steps=3, pretrain_steps=3), str(tmp_path / "run"))
  assert "data.train" not in caplog.text and "eval changed" not in caplog.text, caplog.text
  assert json.load(open(tmp_path / "run" / "best.json"))["step"] in (1, 2)
