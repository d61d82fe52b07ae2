r"""Speed of training, colorizing and loading data; each command prints one JSON line.

    python -m colorjax.bench step --config configs/pix2pix_unet64.py [--config.image_size=256] \
        [--config.batch_size=16] [--phase gan|pretrain] [--steps 10] [--warmup 2] [--profile 2]
    python -m colorjax.bench colorize --workdir runs/demo
    python -m colorjax.bench pipeline --data folder:../shared/data/ade20k [--image-size 256] [--workers 2]

`step` times the jitted update the trainer runs (`gan` = pix2pix's `optimize_parameters`: one
D and one G update) on a fixed random batch, so data loading is not in it; `pipeline` times
data loading alone. Results and the PyTorch comparison live in docs/performance.md and
benchmarks/results.jsonl.
"""

from __future__ import annotations

import collections
import datetime
import glob
import io
import json
import os
import re
import statistics
import sys
import tempfile
import time
from typing import Any, Callable

import jax
import jax.extend.core
import ml_collections
import numpy as np
from absl import app, flags
from ml_collections import config_flags
from PIL import Image

from colorjax import cli, host, models, train
from colorjax import config as config_lib
from colorjax.colorize import Colorizer, parse_flags
from colorjax.data import pipeline, shards, sources

# Dense peak FLOP/s per chip (vendor data sheets), by substring of `device.device_kind`, first
# match wins. float32 is the rate JAX's default matmul precision reaches: one bfloat16 pass on
# TPU, TF32 on NVIDIA GPUs. CPUs are not listed: their peak depends on clocks and sharing.
PEAK_TFLOPS = (  # (device_kind substring, bfloat16, float32)
    ("TPU v4", 275.0, 275.0),
    ("TPU v5 lite", 197.0, 197.0),   # v5e
    ("TPU v5e", 197.0, 197.0),
    ("TPU v5", 459.0, 459.0),        # v5p
    ("TPU v6 lite", 918.0, 918.0),   # v6e (Trillium)
    ("TPU v6e", 918.0, 918.0),
    ("H100 PCIe", 756.0, 378.0),
    ("H100", 989.0, 494.0),          # SXM
    ("H200", 989.0, 494.0),
    ("A100", 312.0, 156.0),
)
PHOTO = os.path.join(os.path.dirname(__file__), "assets", "photos", "astronaut.jpg")


def peak_flops(device_kind: str, dtype: str) -> float | None:
  """Peak FLOP/s of one chip for `dtype` compute, or None when unknown (CPUs)."""
  for name, bf16, f32 in PEAK_TFLOPS:
    if name.lower() in device_kind.lower():
      return (bf16 if dtype == "bfloat16" else f32) * 1e12
  return None


def _environment(dtype: str | None = None) -> dict[str, Any]:
  """`host.environment` after the local date and time the result was measured."""
  return {"date": datetime.datetime.now().isoformat(timespec="seconds"), **host.environment(dtype)}


def timings(fn: Callable[[], Any], steps: int, warmup: int) -> list[float]:
  """Seconds of each of `steps` calls of `fn` after `warmup` untimed ones."""
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return times


def _summary(times: list[float]) -> dict[str, float]:
  return {"steps": len(times), "median_step_s": round(statistics.median(times), 4),
          "min_step_s": round(min(times), 4), "max_step_s": round(max(times), 4)}


def matmul_flops(fn: Callable[..., Any], *args: Any) -> float:
  """FLOPs of the convolutions and matrix products `fn(*args)` runs, counted from its jaxpr.

  MFU's numerator, the same on every backend: XLA's cost analysis misses the convolutions
  XLA:GPU hands to cuDNN (6.5 GFLOP for a 1.36 TFLOP step on an H100) and reports nothing
  for an uncompiled GPU module. Element-wise work is left out, as MFU conventionally does.
  """
  def count(jaxpr: jax.extend.core.Jaxpr) -> float:
    total = 0.0
    for eqn in jaxpr.eqns:
      out = np.prod(eqn.outvars[0].aval.shape, dtype=np.float64)
      if eqn.primitive.name == "conv_general_dilated":
        rhs = eqn.invars[1].aval.shape
        rhs_spec = eqn.params["dimension_numbers"].rhs_spec  # (out features, in features, spatial...)
        taps = np.prod([rhs[d] for d in rhs_spec[1:]], dtype=np.float64)
        # a gradient's transposed convolution dilates its input: only 1 tap in prod(dilation) is real
        total += 2 * out * taps / np.prod(eqn.params["lhs_dilation"])
      elif eqn.primitive.name == "dot_general":
        (lhs_contract, _), _ = eqn.params["dimension_numbers"]
        total += 2 * out * np.prod([eqn.invars[0].aval.shape[d] for d in lhs_contract], dtype=np.float64)
      for sub in jax.extend.core.jaxprs_in_params(eqn.params):
        total += count(sub)
    return total

  return count(jax.make_jaxpr(fn)(*args).jaxpr)


_HLO_OP = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = ")
_OP_NAME = re.compile(r'op_name="([^"]*)"')


def profile_ops(fn: Callable[[], Any], hlo_text: str, steps: int = 2, top: int = 12) -> dict[str, Any]:
  """Device time per XLA op of the compiled module `hlo_text` while `fn` runs `steps` times.

  Reads a `jax.profiler` trace and keeps the events named like an instruction of the module, on
  any backend (CPU thunks, GPU kernels' "XLA Ops"). Ops are grouped by kind (the name without
  its number: `ynn_fusion`, `convolution`, `concatenate`, ...) and the costliest are listed with
  the model code that produced them (the HLO's `op_name`). On CPU ops can overlap on the
  thread pool, so the sum may exceed the step's wall time. Not run on a GPU yet.
  """
  source = {}
  for line in hlo_text.splitlines():
    match = _HLO_OP.match(line)
    if match:
      op_name = _OP_NAME.search(line)
      source[match.group(1)] = op_name.group(1) if op_name else ""
  host: collections.Counter[str] = collections.Counter()
  device: collections.Counter[str] = collections.Counter()
  with tempfile.TemporaryDirectory() as trace_dir:
    with jax.profiler.trace(trace_dir):
      for _ in range(steps):
        fn()
    (path,) = glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True)
    for plane in jax.profiler.ProfileData.from_file(path).planes:
      counter = device if plane.name.startswith("/device:") else host
      for line in plane.lines:
        for event in line.events:
          if event.name in source:
            counter[event.name] += event.duration_ns / 1e6 / steps
  per_op = device or host  # an accelerator's kernels, not the host threads that launched them
  by_kind: collections.Counter[str] = collections.Counter()
  for name, ms in per_op.items():
    by_kind[re.sub(r"[.\d]+$", "", name)] += ms
  return {"profiled_steps": steps, "op_ms_per_step": round(sum(per_op.values()), 1),
          "by_kind_ms": {k: round(v, 1) for k, v in by_kind.most_common(top)},
          "top_ops": [{"op": name, "ms": round(ms, 1), "source": source[name]}
                      for name, ms in per_op.most_common(top)]}


def _step_fn(trainer: train.Trainer, phase: str) -> Callable[..., Any]:
  if phase not in ("gan", "pretrain"):
    raise ValueError(f"phase must be 'gan' (with a discriminator), 'pretrain' or 'auto', got {phase!r}")
  if phase == "gan" and trainer.gan_step is None:
    raise ValueError(f"the config has no discriminator (model.discriminator={trainer.config.model.discriminator!r}), "
                     "so no gan step: use --phase pretrain")
  return trainer.gan_step if phase == "gan" else trainer.pretrain_step


def model_flops(config: ml_collections.ConfigDict, phase: str, rgb: jax.Array) -> float:
  """`matmul_flops` of the step in its exact form: float32, transposed convolutions, one batch.

  MFU's numerator is the model's work, not the implementation's: subpixel upsampling (the GPU
  default) multiplies 2x2 kernels on 4x the channels, +3.5 % FLOPs at 256 px and +14 % at 64,
  and the bfloat16 CPU path's patch matrices add more, none of it the model's. Micro-batches
  (`grad_accum_steps`) run G forward again in the GAN step, and a jaxpr holds their loop's body once.
  """
  exact = config.copy_and_resolve_references()
  exact.model.upsample, exact.dtype, exact.grad_accum_steps = "transpose", "float32", 1
  trainer = train.Trainer(exact)
  return matmul_flops(_step_fn(trainer, phase), jax.eval_shape(trainer.init_state), rgb)


def bench_step(config: ml_collections.ConfigDict, phase: str = "auto", steps: int = 10,
               warmup: int = 2, profile_steps: int = 0) -> dict[str, Any]:
  """Compile time, step time and FLOP rate of the trainer's jitted `phase` update ("auto": the
  GAN step if the config has a discriminator, else the pretrain step); with `profile_steps`,
  also where its time goes (`profile_ops`)."""
  checked = config.copy_and_resolve_references()
  checked.data.train = checked.data.train or "folder:unused"  # the step is timed on random pixels
  config_lib.check_run_config(checked)  # a setting training refuses fails here too, in one line
  trainer = train.Trainer(config)
  if phase == "auto":
    phase = "pretrain" if trainer.gan_step is None else "gan"
  step_fn = _step_fn(trainer, phase)
  state = trainer.init_state()
  local = config.batch_size // jax.process_count()
  pixels = np.random.default_rng(0).integers(0, 256, (local, config.image_size, config.image_size, 3), np.uint8)
  rgb = jax.make_array_from_process_local_data(trainer.data_sharding, pixels)

  start = time.perf_counter()
  compiled = step_fn.lower(state, rgb).compile()
  compile_s = time.perf_counter() - start
  flops = model_flops(config, phase, rgb)  # global: the whole batch's step

  box = [state]

  def run():  # the state is donated: each step consumes the previous one
    box[0], metrics = compiled(box[0], rgb)
    jax.block_until_ready((box[0], metrics))

  times = timings(run, steps, warmup)
  profile = {"profile": profile_ops(run, compiled.as_text(), profile_steps)} if profile_steps else {}
  median = statistics.median(times)
  dtype = models.compute_dtype(config).name
  env = _environment(dtype)
  peak = peak_flops(env["device_kind"], dtype)
  achieved = flops / median / env["device_count"]  # per device
  return {"bench": "step", **env, "phase": phase, "generator": config.model.generator,
          "discriminator": config.model.discriminator, "upsample": config.model.upsample,
          "image_size": config.image_size, "global_batch": config.batch_size,
          "compile_s": round(compile_s, 2), **_summary(times),
          "img_per_s": round(config.batch_size / median, 2),
          "flops_per_step": flops,
          "tflops_per_s": round(achieved * env["device_count"] / 1e12, 4),
          "peak_tflops_per_device": peak / 1e12 if peak else None,
          "mfu": round(achieved / peak, 4) if peak else None, **profile}


def bench_colorize(workdir: str, repeats: int = 10, render_size: int | None = None) -> dict[str, Any]:
  """Milliseconds per photo for a 256 px photo and a 12-MP (4000x3000) one, after a warm-up
  (at `render_size`, default the training size; above it the colour is anchored, as colorize's)."""
  colorizer = Colorizer.from_workdir(workdir, render_size=render_size)
  photo = Image.open(PHOTO).convert("RGB")
  result = {"bench": "colorize", **_environment(), "workdir": workdir,
            "generator": colorizer.config.model.generator, "render_size": colorizer.render_size,
            "colour_anchored": colorizer.anchored}
  for name, size, n in (("256px", (256, 256), repeats), ("12mp", (4000, 3000), max(2, repeats // 3))):
    image = np.asarray(photo.resize(size, Image.BICUBIC))
    times = timings(lambda: colorizer(image), n, 1)
    result[f"ms_{name}"] = round(1e3 * statistics.median(times), 1)
    result[f"ms_{name}_min"] = round(1e3 * min(times), 1)
  return result


def _plain_open(record: pipeline.Record) -> Image.Image:
  """A file path, a shard record (msgpack {key, jpeg}) or a TFDS example, opened plainly."""
  if isinstance(record, str):
    return Image.open(record)
  if isinstance(record, bytes):
    return Image.open(io.BytesIO(shards.unpack_record(record)[1]))
  return Image.fromarray(np.asarray(record["image"]))


def _plain_crop(record: pipeline.Record, image_size: int, rng: np.random.Generator) -> np.ndarray:
  """The loader everyone writes first: full decode, bicubic resize, random crop and flip."""
  with _plain_open(record) as img:
    img = img.convert("RGB")
    scale = image_size / min(img.size)
    img = img.resize((max(image_size, round(img.width * scale)), max(image_size, round(img.height * scale))),
                     Image.BICUBIC)
  rgb = np.asarray(img)
  top = rng.integers(0, rgb.shape[0] - image_size + 1)
  left = rng.integers(0, rgb.shape[1] - image_size + 1)
  crop = rgb[top:top + image_size, left:left + image_size]
  return crop[:, ::-1] if rng.random() < 0.5 else crop


def bench_pipeline(source: str, image_size: int = 256, batch_size: int = 16, workers: int = 0,
                   batches: int = 20) -> dict[str, Any]:
  """Images/s of the training pipeline, and of a plain PIL + NumPy loop over the same files.

  Reads every photo of `source` (no held-out split: a speed needs none, and a split of a few
  photos could leave nothing to read).
  """
  start = time.perf_counter()
  files = sources.resolve(source, "all", 0.0, setting="--data").files
  scan_s = time.perf_counter() - start
  it = iter(pipeline.train_dataset(files, image_size, batch_size, seed=0, num_workers=workers))
  start = time.perf_counter()
  next(it)  # starts the threads / worker processes
  first_s = time.perf_counter() - start
  start = time.perf_counter()
  for _ in range(batches):
    next(it)
  grain_s = time.perf_counter() - start
  n = batches * batch_size
  rng = np.random.default_rng(0)
  start = time.perf_counter()
  for i in range(n):
    _plain_crop(files[i % len(files)], image_size, rng)
  plain_s = time.perf_counter() - start
  return {"bench": "pipeline", **_environment(), "source": source, "files": len(files),
          "image_size": image_size, "batch_size": batch_size, "workers": workers, "images": n,
          "scan_s": round(scan_s, 2), "first_batch_s": round(first_s, 2),
          "img_per_s": round(n / grain_s, 1), "plain_pil_img_per_s": round(n / plain_s, 1)}


FLAGS = flags.FLAGS
COMMANDS = ("step", "colorize", "pipeline")


def main(argv: list[str]) -> None:
  if len(argv) != 2 or argv[1] not in COMMANDS:
    raise app.UsageError(f"usage: python -m colorjax.bench {{{'|'.join(COMMANDS)}}} [flags]")
  host.keep_freed_memory()
  try:
    if argv[1] == "step":
      if FLAGS.config is None:
        raise app.UsageError("bench step needs --config, e.g. configs/pix2pix_unet64.py")
      result = bench_step(cli.loaded_config(), FLAGS.phase, FLAGS.steps, FLAGS.warmup, FLAGS.profile)
      result["config"] = config_flags.get_config_filename(FLAGS["config"])
    elif argv[1] == "colorize":
      if not FLAGS.workdir:
        raise app.UsageError("bench colorize needs --workdir (a trained run)")
      result = bench_colorize(FLAGS.workdir, FLAGS.steps, FLAGS.render_size or None)
    else:
      if not FLAGS.data:
        raise app.UsageError("bench pipeline needs --data, e.g. folder:../shared/data/ade20k")
      result = bench_pipeline(FLAGS.data, FLAGS.image_size, FLAGS.batch_size, FLAGS.workers, FLAGS.batches)
  except (FileNotFoundError, ValueError) as e:  # a bad workdir, source or config: the message says which
    cli.exit_with_error(e)
  result["command"] = " ".join(["python -m colorjax.bench"] + sys.argv[1:])
  print(json.dumps(result), flush=True)


if __name__ == "__main__":
  cli.define_config_flag("step: config file, e.g. configs/pix2pix_unet64.py, or a shipped config's name")
  flags.DEFINE_enum("phase", "auto", ["auto", "gan", "pretrain"],
                    "step: pix2pix G+D update, or G alone on its loss; auto: gan with a discriminator, else pretrain")
  flags.DEFINE_integer("steps", 10, "step: timed steps; colorize: timed 256 px photos", lower_bound=1)
  flags.DEFINE_integer("warmup", 2, "step: untimed steps after compiling", lower_bound=0)
  flags.DEFINE_integer("profile", 0, "step: also trace this many steps and report the time per XLA op", lower_bound=0)
  flags.DEFINE_string("workdir", "", "colorize: a training workdir")
  flags.DEFINE_integer("render_size", 0, "colorize: short side the model sees (default: the training size)", lower_bound=0)
  flags.DEFINE_string("data", "", "pipeline: data source, e.g. folder:PATH")
  flags.DEFINE_integer("image_size", 256, "pipeline: crop size", lower_bound=1)
  flags.DEFINE_integer("batch_size", 16, "pipeline: images per batch", lower_bound=1)
  flags.DEFINE_integer("batches", 20, "pipeline: timed batches", lower_bound=1)
  flags.DEFINE_integer("workers", 0, "pipeline: grain worker processes (0: threads)", lower_bound=0)
  cli.run(main, flags_parser=lambda argv: cli.parse_config_flags(parse_flags, argv))
