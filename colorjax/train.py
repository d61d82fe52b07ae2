"""Trains a colorizer: `python -m colorjax.train --config configs/demo.py [--workdir runs/demo]`.

One trainer for every system (big_vision style): the config names the generator, the
optional discriminator and the losses. Phase 1 (`step < pretrain_steps`) trains G alone on the
reconstruction loss; phase 2 alternates a D update and a G update (pix2pix). Every update is
one jitted function over an explicit `TrainState`, data-parallel over all devices of all
processes: the batch is sharded along the `data` mesh axis and parameters are replicated, so
batch-norm statistics are those of the global batch.

Re-running the same command resumes from the latest checkpoint in the workdir (model,
optimisers and data position). SIGTERM/SIGINT save a checkpoint and exit cleanly.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import signal
import sys
import time
from typing import Any, Callable

import flax
import flax.linen as nn
import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from ml_collections import config_flags
from absl import app, flags
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from PIL import Image

from colorjax import color, losses, metrics, models, writers
from colorjax.data import pipeline, sources

Batch = jax.Array  # uint8 RGB [B, S, S, 3], sharded along "data"


class TrainState(flax.struct.PyTreeNode):
  """Everything that changes during training; the discriminator fields are None without D."""
  step: jax.Array
  g_params: Any
  g_stats: Any
  g_opt: Any
  d_params: Any = None
  d_stats: Any = None
  d_opt: Any = None


def make_optimizer(optim: ml_collections.ConfigDict) -> optax.GradientTransformation:
  return optax.adam(optim.lr, b1=optim.b1, b2=optim.b2)


def create_train_state(config: ml_collections.ConfigDict, rng: jax.Array, generator: nn.Module,
                       discriminator: nn.Module | None) -> TrainState:
  """Initialises parameters (pix2pix init) and optimiser states."""
  g_key, d_key = jax.random.split(rng)
  l = jnp.zeros((1, config.image_size, config.image_size, 1))
  g_vars = generator.init(g_key, l)
  state = TrainState(step=jnp.zeros((), jnp.int32), g_params=g_vars["params"],
                     g_stats=g_vars.get("batch_stats", {}),
                     g_opt=make_optimizer(config.optim.g).init(g_vars["params"]))
  if discriminator is None:
    return state
  d_vars = discriminator.init(d_key, l, jnp.zeros(l.shape[:-1] + (2,)))
  return state.replace(d_params=d_vars["params"], d_stats=d_vars.get("batch_stats", {}),
                       d_opt=make_optimizer(config.optim.d).init(d_vars["params"]))


def _apply_train(module: nn.Module, params: Any, stats: Any, *args: jax.Array,
                 rng: jax.Array | None = None) -> tuple[jax.Array, Any]:
  out, new = module.apply({"params": params, "batch_stats": stats}, *args, train=True,
                          mutable=["batch_stats"], rngs={"dropout": rng} if rng is not None else {})
  return out, new["batch_stats"]


def _update(tx: optax.GradientTransformation, grads: Any, opt_state: Any, params: Any):
  updates, opt_state = tx.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state


def pretrain_step(state: TrainState, rgb: Batch, *, config: ml_collections.ConfigDict,
                  generator: nn.Module) -> tuple[TrainState, dict[str, jax.Array]]:
  """Phase 1: one G update on the reconstruction loss alone."""
  l, ab = color.rgb_uint8_to_model(rgb)
  recon = losses.reconstruction(config.loss.reconstruction)
  rng = jax.random.fold_in(jax.random.key(config.seed), state.step)

  def loss_fn(params):
    pred, stats = _apply_train(generator, params, state.g_stats, l, rng=rng)
    return recon(pred, ab), stats

  (loss, g_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.g_params)
  g_params, g_opt = _update(make_optimizer(config.optim.g), grads, state.g_opt, state.g_params)
  new = state.replace(step=state.step + 1, g_params=g_params, g_stats=g_stats, g_opt=g_opt)
  return new, {"g_recon": loss}


def gan_step(state: TrainState, rgb: Batch, *, config: ml_collections.ConfigDict,
             generator: nn.Module, discriminator: nn.Module) -> tuple[TrainState, dict[str, jax.Array]]:
  """Phase 2, pix2pix's `optimize_parameters`: update D on real vs detached fake, then G.

  G runs forward once; its VJP is kept and reused for the G update after D has moved.
  """
  l, ab = color.rgb_uint8_to_model(rgb)
  recon = losses.reconstruction(config.loss.reconstruction)
  rng = jax.random.fold_in(jax.random.key(config.seed), state.step)
  fake, g_vjp, g_stats = jax.vjp(
      lambda p: _apply_train(generator, p, state.g_stats, l, rng=rng), state.g_params, has_aux=True)

  def d_loss_fn(params):
    fake_logits, stats = _apply_train(discriminator, params, state.d_stats, l, jax.lax.stop_gradient(fake))
    real_logits, stats = _apply_train(discriminator, params, stats, l, ab)
    return losses.discriminator_loss(real_logits, fake_logits), stats

  (d_loss, d_stats), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(state.d_params)
  d_params, d_opt = _update(make_optimizer(config.optim.d), d_grads, state.d_opt, state.d_params)

  def g_loss_fn(fake_ab):
    logits, stats = _apply_train(discriminator, d_params, d_stats, l, fake_ab)
    adv, rec = losses.bce_with_logits(logits, True), recon(fake_ab, ab)
    return adv + config.loss.l1_weight * rec, (adv, rec, stats)

  (g_loss, (adv, rec, d_stats)), d_fake = jax.value_and_grad(g_loss_fn, has_aux=True)(fake)
  (g_grads,) = g_vjp(d_fake)
  g_params, g_opt = _update(make_optimizer(config.optim.g), g_grads, state.g_opt, state.g_params)
  new = state.replace(step=state.step + 1, g_params=g_params, g_stats=g_stats, g_opt=g_opt,
                      d_params=d_params, d_stats=d_stats, d_opt=d_opt)
  return new, {"g_loss": g_loss, "g_adv": adv, "g_recon": rec, "d_loss": d_loss}


def predict_ab(generator: nn.Module, params: Any, stats: Any, l: jax.Array) -> jax.Array:
  """Inference: model-space L [B, H, W, 1] -> ab [B, H, W, 2] with running BN statistics."""
  return generator.apply({"params": params, "batch_stats": stats}, l, train=False)


def eval_step(state: TrainState, rgb: Batch, mask: jax.Array, *,
              generator: nn.Module) -> tuple[metrics.EvalMetrics, jax.Array]:
  """Held-out metrics of the model and of the no-colour baseline; returns the predictions."""
  l, ab = color.rgb_uint8_to_model(rgb)
  pred = predict_ab(generator, state.g_params, state.g_stats, l)
  pred_u8 = color.to_uint8(color.model_to_rgb(l, pred))
  gray_u8 = color.to_uint8(color.model_to_rgb(l, jnp.zeros_like(pred)))
  scores = metrics.psnr_ssim_mse(pred_u8, rgb)
  gray = metrics.psnr_ssim_mse(gray_u8, rgb)
  m = metrics.EvalMetrics.single_from_model_output(
      l1=jnp.mean(jnp.abs(pred - ab), axis=(1, 2, 3)), **scores, mask=mask,
      colorfulness=metrics.colorfulness(pred_u8), real_colorfulness=metrics.colorfulness(rgb),
      gray_psnr=gray["psnr"], gray_ssim=gray["ssim"])
  return m, pred_u8


class _StopSignal:
  """Turns SIGTERM/SIGINT into a request to checkpoint and exit at the next step boundary."""

  def __init__(self):
    self.received: int | None = None
    for sig in (signal.SIGTERM, signal.SIGINT):
      signal.signal(sig, self._handle)

  def _handle(self, signum, frame):
    del frame
    self.received = signum
    signal.signal(signum, signal.SIG_DFL)  # a second signal kills at once


def _agree(flag: bool) -> bool:
  """True on every process if it is True on any (processes must stop at the same step)."""
  if jax.process_count() == 1:
    return flag
  return bool(np.any(multihost_utils.process_allgather(np.array(flag))))


def _sample_grid(rgb: np.ndarray, pred: np.ndarray) -> np.ndarray:
  """Rows: gray input | prediction | ground truth, one column per image."""
  gray = np.asarray(color.to_uint8(color.model_to_rgb(
      color.rgb_uint8_to_model(rgb, np)[0], np.zeros(rgb.shape[:-1] + (2,)), np), np))
  return np.concatenate([np.concatenate(list(x), axis=1) for x in (gray, pred, rgb)], axis=0)


def _format_duration(seconds: float) -> str:
  seconds = int(seconds)
  return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


class Trainer:
  """Owns the mesh, the jitted steps and their shardings; `train_and_evaluate` owns the loop."""

  def __init__(self, config: ml_collections.ConfigDict, devices: list[jax.Device] | None = None):
    self.config = config
    devices = jax.devices() if devices is None else devices
    self.generator = models.build_generator(config)
    self.discriminator = (models.build_discriminator(config)
                          if config.model.discriminator != "none" else None)
    if config.batch_size % len(devices):
      raise ValueError(f"batch_size={config.batch_size} must be a multiple of the {len(devices)} devices")
    self.mesh = Mesh(np.asarray(devices), ("data",))
    self.data_sharding = NamedSharding(self.mesh, P("data"))
    self.replicated = NamedSharding(self.mesh, P())
    jit = functools.partial(jax.jit, in_shardings=(self.replicated, self.data_sharding),
                            out_shardings=self.replicated, donate_argnums=0)
    self.pretrain_step = jit(functools.partial(pretrain_step, config=config, generator=self.generator))
    self.gan_step = (jit(functools.partial(gan_step, config=config, generator=self.generator,
                                           discriminator=self.discriminator))
                     if self.discriminator is not None else None)
    self.eval_step = jax.jit(functools.partial(eval_step, generator=self.generator),
                             in_shardings=(self.replicated, self.data_sharding, self.data_sharding),
                             out_shardings=self.replicated)

  def init_state(self) -> TrainState:
    init = functools.partial(create_train_state, self.config, generator=self.generator,
                             discriminator=self.discriminator)
    return jax.jit(init, out_shardings=self.replicated)(jax.random.key(self.config.seed))

  def step(self, state: TrainState, local_rgb: np.ndarray) -> tuple[TrainState, dict[str, jax.Array]]:
    rgb = jax.make_array_from_process_local_data(self.data_sharding, local_rgb)
    in_pretrain = self.gan_step is None or int(state.step) < self.config.pretrain_steps
    return (self.pretrain_step if in_pretrain else self.gan_step)(state, rgb)

  def evaluate(self, state: TrainState, images: np.ndarray) -> tuple[dict[str, float], np.ndarray]:
    """Metrics over all `images` (identical on every process) and the predictions of the first batch."""
    bs = self.config.batch_size
    total, first_preds = None, None
    for start in range(0, len(images), bs):
      chunk = images[start:start + bs]
      mask = np.arange(bs) < len(chunk)
      chunk = np.concatenate([chunk, np.zeros((bs - len(chunk),) + chunk.shape[1:], chunk.dtype)])
      put = lambda x: jax.make_array_from_callback(x.shape, self.data_sharding, lambda idx: x[idx])
      m, preds = self.eval_step(state, put(chunk), put(mask))
      total = m if total is None else total.merge(m)
      if first_preds is None:
        first_preds = np.asarray(preds)[:int(mask.sum())]
    return {k: float(v) for k, v in total.compute().items()}, first_preds


def _checkpoint_manager(workdir: str, config: ml_collections.ConfigDict) -> ocp.CheckpointManager:
  # Synchronous saves: grain's iterator state must be read at the step it belongs to.
  options = ocp.CheckpointManagerOptions(max_to_keep=config.keep_checkpoints, create=True,
                                         enable_async_checkpointing=False)
  return ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), "checkpoints"), options=options)


def restore_state(mgr: ocp.CheckpointManager, state: TrainState, step: int | None = None,
                  data_iterator: Any = None) -> TrainState:
  """Restores `state` (and the data iterator's position, if given) from checkpoint `step`."""
  step = mgr.latest_step() if step is None else step
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
  args = {"state": ocp.args.StandardRestore(abstract)}
  if data_iterator is not None:
    args["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
  return mgr.restore(step, args=ocp.args.Composite(**args)).state


def _save(mgr: ocp.CheckpointManager, state: TrainState, data_iterator: Any) -> None:
  step = int(state.step)
  if step in mgr.all_steps():
    return
  mgr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                         data=grain.checkpoint.CheckpointSave(data_iterator)), force=True)


def _write_config(workdir: str, config: ml_collections.ConfigDict) -> None:
  path = os.path.join(workdir, "config.json")
  if os.path.exists(path):
    with open(path) as f:
      old = json.load(f)
    changed = sorted(k for k, v in flax.traverse_util.flatten_dict(json.loads(config.to_json())).items()
                     if flax.traverse_util.flatten_dict(old).get(k) != v)
    if changed:
      logging.warning("resuming with a changed config: %s", ", ".join(".".join(k) for k in changed))
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.write(config.to_json(indent=2))
  os.replace(tmp, path)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains `config` in `workdir` (resuming if it has checkpoints); returns the final eval metrics."""
  os.makedirs(os.path.join(workdir, "samples"), exist_ok=True)
  is_main = jax.process_index() == 0
  if is_main:
    _write_config(workdir, config)
  writer = writers.create_writer(workdir, is_main)
  trainer = Trainer(config)
  logging.info("devices: %d x %s (%d processes)", jax.device_count(), jax.devices()[0].device_kind,
               jax.process_count())

  eval_spec = config.data.eval or config.data.train
  train_report = sources.resolve(config.data.train, "train", config.data.eval_fraction)
  eval_report = sources.resolve(eval_spec, "eval" if not config.data.eval else "all", config.data.eval_fraction)
  logging.info("train data: %s", train_report.summary())
  logging.info("eval data: %s", eval_report.summary())
  eval_images = pipeline.eval_images(eval_report.files, config.image_size, config.eval_max_images)
  local_batch = config.batch_size // jax.process_count()
  data = pipeline.train_dataset(train_report.files, config.image_size, local_batch, config.seed,
                                config.data.num_workers)
  data_iter = iter(data)

  state = trainer.init_state()
  mgr = _checkpoint_manager(workdir, config)
  if mgr.latest_step() is not None:
    state = restore_state(mgr, state, data_iterator=data_iter)
    logging.info("resumed from %s at step %d", mgr.directory, int(state.step))

  stop = _StopSignal()
  step = int(state.step)
  window, window_start, window_step = [], time.time(), step
  summary: dict[str, float] = {}
  while step < config.total_steps:
    state, step_metrics = trainer.step(state, next(data_iter))
    window.append(step_metrics)
    step += 1
    last = step == config.total_steps
    if step % config.log_every == 0 or last:
      scalars = {k: float(np.mean([m[k] for m in jax.device_get(window) if k in m]))
                 for k in set().union(*window)}
      elapsed = time.time() - window_start
      rate = (step - window_step) * config.batch_size / max(elapsed, 1e-9)
      eta = (config.total_steps - step) * config.batch_size / max(rate, 1e-9)
      phase = "pretrain" if step <= config.pretrain_steps or trainer.gan_step is None else "gan"
      logging.info("step %d/%d [%s] %s | %.1f img/s | ETA %s", step, config.total_steps, phase,
                   " ".join(f"{k}={v:.4f}" for k, v in sorted(scalars.items())), rate, _format_duration(eta))
      writer.write_scalars(step, {**{f"train/{k}": v for k, v in scalars.items()}, "train/img_per_s": rate})
      window, window_start, window_step = [], time.time(), step
    if step % config.eval_every == 0 or last:
      summary = _evaluate_and_log(trainer, state, eval_images, writer, workdir, step)
    if step % config.checkpoint_every == 0 or last:
      _save(mgr, state, data_iter)
    if _agree(stop.received is not None) and not last:
      _save(mgr, state, data_iter)
      logging.info("stopped by signal at step %d; checkpoint saved. Re-run the same command to resume.", step)
      break
  mgr.wait_until_finished()
  writer.flush()
  if is_main and step == config.total_steps:
    final = {"step": step, **summary}
    with open(os.path.join(workdir, "final_metrics.json"), "w") as f:
      json.dump(final, f, indent=2)
    logging.info("final: %s", json.dumps(final))
  return summary


def _evaluate_and_log(trainer: Trainer, state: TrainState, images: np.ndarray, writer: Any,
                      workdir: str, step: int) -> dict[str, float]:
  summary, preds = trainer.evaluate(state, images)
  logging.info("eval @ %d on %d photos: PSNR %.2f dB (no colour: %.2f), SSIM %.4f (no colour: %.4f), "
               "colourfulness %.1f (real: %.1f), ab L1 %.4f", step, len(images), summary["psnr"],
               summary["gray_psnr"], summary["ssim"], summary["gray_ssim"], summary["colorfulness"],
               summary["real_colorfulness"], summary["l1"])
  writer.write_scalars(step, {f"eval/{k}": v for k, v in summary.items()})
  grid = _sample_grid(images[:len(preds)][:8], preds[:8])
  writer.write_images(step, {"samples": grid[None]})
  if jax.process_index() == 0:
    Image.fromarray(grid).save(os.path.join(workdir, "samples", f"step_{step:07d}.png"))
  return summary


def main(argv: list[str]) -> None:
  del argv
  config = flags.FLAGS.config
  workdir = flags.FLAGS.workdir or os.path.join(
      "runs", os.path.splitext(os.path.basename(config_flags.get_config_filename(flags.FLAGS["config"])))[0])
  train_and_evaluate(config, workdir)


if __name__ == "__main__":
  config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/demo.py", lock_config=True)
  flags.DEFINE_string("workdir", "", "Checkpoints, logs and samples (default: runs/<config name>)")
  flags.mark_flags_as_required(["config"])
  logging.getLogger().setLevel(logging.INFO)
  app.run(main)
