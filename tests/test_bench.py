"""The benchmark commands run on a tiny model and report numbers that hang together."""

import json
import os
import subprocess
import sys

import pytest

from colorjax import bench
from colorjax.data import sources
from test_train import REPO, tiny_config, write_photos


def test_step_reports_time_rate_and_flops(tmp_path):
  config = tiny_config(write_photos(str(tmp_path / "photos"), n=4))
  result = bench.bench_step(config, phase="gan", steps=2, warmup=1)
  assert result["steps"] == 2 and result["min_step_s"] <= result["median_step_s"] <= result["max_step_s"]
  assert result["img_per_s"] == pytest.approx(config.batch_size / result["median_step_s"], rel=0.01)
  assert result["flops_per_step"] > 0 and result["mfu"] is None  # no published peak for a CPU
  import jax
  from colorjax import models
  assert result["dtype"] == models.compute_dtype(config).name and result["jax"] == jax.__version__  # host.environment
  with pytest.raises(ValueError, match="phase must be"):
    bench.bench_step(config, phase="warmup")
  # The regressors and the classifier have no D: their one step is timed, not a contradiction.
  config.model.discriminator = "none"
  with pytest.raises(ValueError, match="the config has no discriminator .model.discriminator='none'., so no gan step: use --phase pretrain"):
    bench.bench_step(config, phase="gan")
  assert bench.bench_step(config, steps=1, warmup=0)["phase"] == "pretrain"
  config.model.discriminator = "patchgan"
  config.model.encoder_weights = "r18.pth"  # what training refuses, bench refuses before compiling
  with pytest.raises(ValueError, match="model.generator 'pix2pix_unet' has no ResNet encoder"):
    bench.bench_step(config)


def test_flops_are_the_models_whichever_upsampling_computes_them():
  """subpixel's 2x2 kernels on 4x the channels do more multiply-adds than the transposed
  convolution they equal; MFU counts the model's, also in micro-batches."""
  import jax.numpy as jnp
  import numpy as np
  from colorjax import train
  rgb = jnp.asarray(np.zeros((8, 32, 32, 3), np.uint8))
  counts = {}
  for upsample in ("transpose", "subpixel", "col2im"):
    config = tiny_config("unused", **{"model.upsample": upsample, "dtype": "float32"})
    trainer = train.Trainer(config)
    counts[upsample] = (bench.matmul_flops(trainer.gan_step, trainer.init_state(), rgb),
                        bench.model_flops(config, "gan", rgb))
  assert counts["subpixel"][0] > 1.05 * counts["transpose"][0]  # what the implementation multiplies
  assert counts["subpixel"][1] == counts["col2im"][1] == counts["transpose"][1] == counts["transpose"][0]
  in_micro_batches = tiny_config("unused", grad_accum_steps=2)  # G forward twice, a loop body counted once
  assert bench.model_flops(in_micro_batches, "gan", rgb) == counts["transpose"][0]


def test_step_profile_names_the_ops_and_the_layers_they_come_from(tmp_path):
  config = tiny_config(write_photos(str(tmp_path / "photos"), n=4))
  profile = bench.bench_step(config, phase="gan", steps=1, warmup=1, profile_steps=1)["profile"]
  assert profile["profiled_steps"] == 1 and profile["op_ms_per_step"] > 0
  assert sum(op["ms"] for op in profile["top_ops"]) <= profile["op_ms_per_step"] + 0.1
  assert sum(profile["by_kind_ms"].values()) <= profile["op_ms_per_step"] + 0.1
  assert all(not kind[-1].isdigit() for kind in profile["by_kind_ms"])
  sources = " ".join(op["source"] for op in profile["top_ops"])
  assert "UNetGenerator" in sources or "PatchGAN" in sources


def test_peak_flops_matches_the_most_specific_device_name():
  assert bench.peak_flops("NVIDIA H100 PCIe", "bfloat16") == 756e12
  assert bench.peak_flops("NVIDIA H100 80GB HBM3", "float32") == 494e12
  assert bench.peak_flops("TPU v5 lite", "bfloat16") == 197e12
  assert bench.peak_flops("cpu", "float32") is None


def test_pipeline_command_prints_one_json_line(tmp_path):
  photos = write_photos(str(tmp_path / "photos"), n=2, size=(80, 96))
  # one photo that a held-out split of 10 % takes: the speed is measured over every photo
  os.rename(os.path.join(photos, "photo_01.png"), os.path.join(photos, "held_1.png"))
  assert sources.in_eval_split("held_1.png", 0.1)
  out = subprocess.run([sys.executable, "-m", "colorjax.bench", "pipeline", f"--data=folder:{photos}",
                        "--image_size=32", "--batch_size=4", "--batches=3"],
                       cwd=REPO, env={**os.environ, "PYTHONPATH": REPO}, capture_output=True, text=True,
                       timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  result = json.loads(out.stdout.strip().splitlines()[-1])
  assert result["images"] == 12 and result["img_per_s"] > 0 and result["plain_pil_img_per_s"] > 0
  assert result["files"] == 2


def test_pipeline_bench_reads_shards_in_both_loops(tmp_path):
  from colorjax import prepare
  photos = write_photos(str(tmp_path / "photos"), n=8, size=(80, 96))
  prepare.prepare(f"folder:{photos}", str(tmp_path / "shards"), size=48, workers=1, progress=False)
  result = bench.bench_pipeline(f"shards:{tmp_path / 'shards'}", image_size=32, batch_size=4, batches=2)
  assert result["images"] == 8 and result["img_per_s"] > 0 and result["plain_pil_img_per_s"] > 0


def test_matmul_flops_counts_convolutions_their_gradients_and_matrix_products():
  import jax
  import jax.numpy as jnp
  n, h, cin, cout, k, s = 2, 64, 8, 12, 4, 2
  x, w = jnp.ones((n, h, h, cin)), jnp.ones((k, k, cin, cout))
  conv = lambda x, w: jax.lax.conv_general_dilated(x, w, (s, s), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
  ho = (h - k) // s + 1
  forward = 2 * n * ho * ho * cout * k * k * cin  # one multiply-add per tap, output and input channel
  assert bench.matmul_flops(conv, x, w) == forward
  # forward, input gradient (a stride-dilated transposed conv: real taps only) and kernel gradient
  grads = jax.grad(lambda x, w: (conv(x, w) ** 2).sum(), argnums=(0, 1))
  assert bench.matmul_flops(grads, x, w) == pytest.approx(3 * forward, rel=0.1)
  a, b = jnp.ones((3, 5, 7)), jnp.ones((7, 11))
  assert bench.matmul_flops(jax.jit(lambda a, b: a @ b), a, b) == 2 * 3 * 5 * 7 * 11  # through pjit
