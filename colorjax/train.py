"""Trains a colorizer: `python -m colorjax.train --config configs/demo.py [--workdir runs/demo]`.

One trainer for every system (big_vision style): the config names the generator, the
optional discriminator and the losses. Phase 1 (`step < pretrain_steps`) trains G alone on the
reconstruction loss; phase 2 alternates a D update and a G update (pix2pix). Every update is
one jitted function over an explicit `TrainState`, data-parallel over all devices of all
processes: the batch is sharded along the `data` mesh axis and parameters are replicated, so
batch-norm statistics are those of the global batch.

Re-running the same command resumes from the latest checkpoint in the workdir (model,
optimisers and data position). SIGTERM/SIGINT save a checkpoint and exit with status 128 + the signal (143, 130).
Each run of the command that trains adds its start (step, command line, `host.environment`) and
its end (step, how, wall seconds) to `workdir/runs.jsonl`; final_metrics.json sums their time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import errno
import fcntl
import functools
import itertools
import json
import logging
import os
import re
import signal
import sys
import time
from typing import Any, Callable, Sequence

import flax
import flax.linen as nn
import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from absl import flags
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from PIL import Image

from colorjax import ab_bins, checkpoints, cli, color, distributed, fid, host, losses, metrics, models, writers
from colorjax import config as config_lib
from colorjax.data import pipeline, shards, sources
from colorjax.models import pretrained

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
  g_ema: Any = None  # exponential moving average of g_params (None when config.ema_decay == 0)


def learning_rate(config: ml_collections.ConfigDict, name: str) -> float | optax.Schedule:
  """Network `name`'s ("g" or "d") rate; `decay_steps` anneals it to 0 along a cosine, which is
  what a short run needs to settle (configs/quick_cpu.py). A constant rate stays a float, so
  the optimiser state (no schedule count) and old checkpoints keep their structure."""
  optim, decay_steps = config.optim[name], config_lib.decay_steps(config, name)
  return optax.cosine_decay_schedule(optim.lr, decay_steps) if decay_steps else optim.lr


def make_optimizer(config: ml_collections.ConfigDict, name: str) -> optax.GradientTransformation:
  """Adam with `learning_rate`'s rate and the config's betas."""
  optim = config.optim[name]
  return optax.adam(learning_rate(config, name), b1=optim.b1, b2=optim.b2)


def create_train_state(config: ml_collections.ConfigDict, rng: jax.Array, generator: nn.Module,
                       discriminator: nn.Module | None, encoder: tuple[Any, Any] | None = None
                       ) -> TrainState:
  """Initialises parameters (pix2pix init, or `encoder` = pretrained (params, batch_stats)
  of the ResNet encoder from `pretrained.load_torchvision_resnet`) and optimiser states."""
  g_key, d_key = jax.random.split(rng)
  l = jnp.zeros((1, config.image_size, config.image_size, 1))
  g_vars = generator.init(g_key, l)
  if encoder is not None:
    g_vars = pretrained.merge_encoder(g_vars, *encoder)
  state = TrainState(step=jnp.zeros((), jnp.int32), g_params=g_vars["params"],
                     g_stats=g_vars.get("batch_stats", {}),
                     g_opt=make_optimizer(config, "g").init(g_vars["params"]),
                     g_ema=g_vars["params"] if config.ema_decay > 0 else None)
  if discriminator is None:
    return state
  d_vars = discriminator.init(d_key, l, jnp.zeros(l.shape[:-1] + (2,)))
  return state.replace(d_params=d_vars["params"], d_stats=d_vars.get("batch_stats", {}),
                       d_opt=make_optimizer(config, "d").init(d_vars["params"]))


def _apply_train(module: nn.Module, params: Any, stats: Any, *args: jax.Array,
                 rng: jax.Array | None = None) -> tuple[jax.Array, Any]:
  out, new = module.apply({"params": params, "batch_stats": stats}, *args, train=True,
                          mutable=["batch_stats"], rngs={"dropout": rng} if rng is not None else {})
  return out, new["batch_stats"]


def _update(tx: optax.GradientTransformation, grads: Any, opt_state: Any, params: Any):
  updates, opt_state = tx.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state


def _update_g(state: TrainState, config: ml_collections.ConfigDict, grads: Any, g_stats: Any,
              **others: Any) -> TrainState:
  """Applies G's gradients, advances the step and the weight average."""
  g_params, g_opt = _update(make_optimizer(config, "g"), grads, state.g_opt, state.g_params)
  g_ema = state.g_ema
  if g_ema is not None:
    # Warm-up as TF's ExponentialMovingAverage(num_updates): early averages forget the init.
    decay = jnp.minimum(config.ema_decay, (1.0 + state.step) / (10.0 + state.step))
    g_ema = optax.incremental_update(g_params, g_ema, 1.0 - decay)
  return state.replace(step=state.step + 1, g_params=g_params, g_stats=g_stats, g_opt=g_opt,
                       g_ema=g_ema, **others)


def reconstruction_loss(config: ml_collections.ConfigDict, pred: jax.Array, ab: jax.Array,
                        class_weights: jax.Array | None) -> jax.Array:
  """G's supervised objective: phase 1 of every system and the lambda-weighted term of phase 2.

  Classifiers (model.num_classes > 0): cross-entropy over ab classes, rebalanced by
  `class_weights`. Regressors: the configured reconstruction loss, per-pixel weighted by
  `class_weights` of the true colour when given (colour-weighted loss), plus TV on ab.
  """
  classes = ab_bins.ab_to_class(ab) if class_weights is not None or config.model.num_classes else None
  if config.model.num_classes:
    return losses.class_cross_entropy(pred, classes, class_weights)
  weights = class_weights[classes] if class_weights is not None else None
  loss = losses.reconstruction(config.loss.reconstruction, config.loss.smooth_l1_beta)(pred, ab, weights)
  if config.loss.tv_weight:
    loss += config.loss.tv_weight * losses.total_variation(pred)
  return loss


def _micro_batches(rgb: Batch, k: int, sharding: NamedSharding | None) -> jax.Array:
  """`rgb` [B, ...] as k micro-batches [k, B / k, ...]. Micro-batch j holds rows j, j + k, ...,
  so each is spread over the devices as the batch is, and no photo moves between them."""
  micro = rgb.reshape(rgb.shape[0] // k, k, *rgb.shape[1:]).swapaxes(0, 1)
  return micro if sharding is None else jax.lax.with_sharding_constraint(micro, sharding)


def _accumulate(grads_of: Callable[[Batch, Any, jax.Array], tuple[Any, Any, dict[str, jax.Array]]],
                rgb: Batch, carry: Any, rng: jax.Array, params: Any, k: int,
                sharding: NamedSharding | None) -> tuple[Any, Any, dict[str, jax.Array]]:
  """`grads_of(rgb, carry, rng)` -> (gradients of `params`, carry, losses), averaged over k
  micro-batches of `rgb` in turn (`config.grad_accum_steps`): one update of the whole batch with
  the memory of one micro-batch. `carry` (batch-norm statistics) goes through them in order.
  k = 1 is the plain step, with `rng` as it is."""
  if k == 1:
    return grads_of(rgb, carry, rng)

  def micro_step(acc, xs):
    grad_sum, carry = acc
    micro, i = xs
    grads, carry, logged = grads_of(micro, carry, jax.random.fold_in(rng, i))
    return (jax.tree.map(jnp.add, grad_sum, grads), carry), logged

  zeros = jax.tree.map(jnp.zeros_like, params)
  (grad_sum, carry), logged = jax.lax.scan(micro_step, (zeros, carry),
                                            (_micro_batches(rgb, k, sharding), jnp.arange(k)))
  return jax.tree.map(lambda g: g / k, grad_sum), carry, jax.tree.map(jnp.mean, logged)


def pretrain_step(state: TrainState, rgb: Batch, *, config: ml_collections.ConfigDict,
                  generator: nn.Module, class_weights: jax.Array | None = None,
                  micro_sharding: NamedSharding | None = None) -> tuple[TrainState, dict[str, jax.Array]]:
  """Phase 1: one G update on the reconstruction loss alone."""
  rng = jax.random.fold_in(jax.random.key(config.seed), state.step)

  def grads_of(rgb, g_stats, rng):
    l, ab = color.rgb_uint8_to_model(rgb)

    def loss_fn(params):
      pred, stats = _apply_train(generator, params, g_stats, l, rng=rng)
      return reconstruction_loss(config, pred, ab, class_weights), stats

    (loss, g_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.g_params)
    return grads, g_stats, {"g_recon": loss}

  grads, g_stats, logged = _accumulate(grads_of, rgb, state.g_stats, rng, state.g_params,
                                        config.grad_accum_steps, micro_sharding)
  return _update_g(state, config, grads, g_stats), logged


def gan_step(state: TrainState, rgb: Batch, *, config: ml_collections.ConfigDict,
             generator: nn.Module, discriminator: nn.Module, class_weights: jax.Array | None = None,
             micro_sharding: NamedSharding | None = None) -> tuple[TrainState, dict[str, jax.Array]]:
  """Phase 2, pix2pix's `optimize_parameters`: update D on real vs detached fake, then G.

  G runs forward once; its VJP is kept and reused for the G update after D has moved. With
  micro-batches (`config.grad_accum_steps` > 1) D's pass and G's each run G forward: keeping
  every micro-batch's VJP until D has moved would cost the memory that micro-batches save.
  """
  rng = jax.random.fold_in(jax.random.key(config.seed), state.step)

  def g_forward(g_stats, l, rng):
    return jax.vjp(lambda p: _apply_train(generator, p, g_stats, l, rng=rng), state.g_params, has_aux=True)

  def d_grads_of(d_params, d_stats, l, ab, fake):
    def d_loss_fn(params):
      fake_logits, stats = _apply_train(discriminator, params, d_stats, l, jax.lax.stop_gradient(fake))
      real_logits, stats = _apply_train(discriminator, params, stats, l, ab)
      return losses.discriminator_loss(real_logits, fake_logits), stats

    (d_loss, d_stats), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(d_params)
    return d_grads, d_stats, {"d_loss": d_loss}

  def g_grads_of(d_params, d_stats, l, ab, fake, g_vjp):
    def g_loss_fn(fake_ab):
      logits, stats = _apply_train(discriminator, d_params, d_stats, l, fake_ab)
      adv, rec = losses.bce_with_logits(logits, True), reconstruction_loss(config, fake_ab, ab, class_weights)
      return adv + config.loss.l1_weight * rec, (adv, rec, stats)

    (g_loss, (adv, rec, d_stats)), d_fake = jax.value_and_grad(g_loss_fn, has_aux=True)(fake)
    (g_grads,) = g_vjp(d_fake)
    return g_grads, d_stats, {"g_loss": g_loss, "g_adv": adv, "g_recon": rec}

  d_tx, k = make_optimizer(config, "d"), config.grad_accum_steps
  if k == 1:
    l, ab = color.rgb_uint8_to_model(rgb)
    fake, g_vjp, g_stats = g_forward(state.g_stats, l, rng)
    d_grads, d_stats, d_logged = d_grads_of(state.d_params, state.d_stats, l, ab, fake)
    d_params, d_opt = _update(d_tx, d_grads, state.d_opt, state.d_params)
    g_grads, d_stats, g_logged = g_grads_of(d_params, d_stats, l, ab, fake, g_vjp)
  else:
    def d_pass(rgb, d_stats, rng):
      l, ab = color.rgb_uint8_to_model(rgb)
      fake, _ = _apply_train(generator, state.g_params, state.g_stats, l, rng=rng)
      return d_grads_of(state.d_params, d_stats, l, ab, fake)

    def g_pass(rgb, stats, rng):
      l, ab = color.rgb_uint8_to_model(rgb)
      fake, g_vjp, g_stats = g_forward(stats[0], l, rng)
      g_grads, d_stats, g_logged = g_grads_of(d_params, stats[1], l, ab, fake, g_vjp)
      return g_grads, (g_stats, d_stats), g_logged

    d_grads, d_stats, d_logged = _accumulate(d_pass, rgb, state.d_stats, rng, state.d_params, k, micro_sharding)
    d_params, d_opt = _update(d_tx, d_grads, state.d_opt, state.d_params)
    g_grads, (g_stats, d_stats), g_logged = _accumulate(g_pass, rgb, (state.g_stats, d_stats), rng,
                                                        state.g_params, k, micro_sharding)
  new = _update_g(state, config, g_grads, g_stats, d_params=d_params, d_stats=d_stats, d_opt=d_opt)
  return new, {**g_logged, **d_logged}


def inference_fields(state: TrainState) -> tuple[str, str]:
  """The fields eval and colorize use: G's weights (the EMA when it is kept) and statistics."""
  return ("g_ema" if state.g_ema is not None else "g_params", "g_stats")


def inference_params(state: TrainState) -> Any:
  return getattr(state, inference_fields(state)[0])


def score_batch(generator: nn.Module, params: Any, stats: Any, rgb: jax.Array
                ) -> tuple[dict[str, jax.Array], jax.Array]:
  """uint8 RGB crops [B, S, S, 3] -> (per-photo scores [B] each, prediction); the model sees
  the L of the whole crop and its ab is laid over that L."""
  l, ab = color.rgb_uint8_to_model(rgb)
  pred = models.predict_ab(generator, params, stats, l)
  pred_u8 = color.to_uint8(color.model_to_rgb(l, pred))
  scores = {**metrics.score_predictions(pred_u8, rgb), "l1": jnp.mean(jnp.abs(pred - ab), axis=(1, 2, 3))}
  if getattr(generator, "num_classes", 0):
    scores["pixel_accuracy"] = metrics.pixel_accuracy(pred_u8, rgb)  # of the delivered colour, as evaluate
  return scores, pred_u8


def eval_step(state: TrainState, rgb: Batch, mask: jax.Array, *,
              generator: nn.Module) -> tuple[Any, jax.Array]:
  """Held-out clu metrics of the model (EMA weights if kept) and of the no-colour baseline."""
  scores, pred_u8 = score_batch(generator, inference_params(state), state.g_stats, rgb)
  collection = metrics.ClassifierEvalMetrics if "pixel_accuracy" in scores else metrics.EvalMetrics
  return collection.single_from_model_output(**scores, mask=mask), pred_u8


class _Throughput:
  """img/s of each log window, leaving out the steps that compile and the time of evals and
  checkpoint saves; the ETA adds the run's average time of those back, so it is wall time.
  The first eval of a process compiles it (tens of seconds for a large model): counted as every
  eval, it put minutes on the ETA just after a start or resume (6 min for 1 left)."""

  def __init__(self, step: int):
    self.event_seconds, self.timed_steps = 0.0, 0  # over the run, for the ETA
    self.plain_events, self.first_event_seconds = 0, 0.0  # plain: without the first eval's compile
    self.evaluated = False
    self.next_window(step)

  def next_window(self, step: int) -> None:
    self.step, self.start, self.paused, self.untimed = step, time.time(), 0.0, 0

  def compiled(self, seconds: float) -> None:
    self.paused += seconds
    self.untimed += 1

  def event(self, seconds: float, evaluated: bool) -> None:
    """An eval and/or a checkpoint save (`evaluated`: with an eval) that took `seconds`."""
    self.paused += seconds
    if evaluated and not self.evaluated:  # its compile: its time stands in for no other event's
      self.evaluated, self.first_event_seconds = True, seconds
    else:
      self.plain_events += 1
      self.event_seconds += seconds

  def _event_seconds(self) -> float:
    """The run's time in evals and saves so far, with the compiling one counted as a plain one."""
    if not self.plain_events:
      return self.first_event_seconds
    return self.event_seconds * (self.plain_events + self.evaluated) / self.plain_events

  def report(self, step: int, total_steps: int, batch_size: int) -> tuple[float | None, str]:
    """(img/s or None when every step of the window compiled, the log line's speed part)."""
    timed = step - self.step - self.untimed
    if not timed:
      return None, "compiled"
    seconds = max(time.time() - self.start - self.paused, 1e-9)
    self.timed_steps += timed
    rate = timed * batch_size / seconds
    eta = (total_steps - step) * (seconds / timed + self._event_seconds() / self.timed_steps)
    return rate, f"{rate:.1f} img/s | ETA {_format_duration(eta)}"


class _StopSignal:
  """Turns SIGTERM/SIGINT into a request to checkpoint and exit at the next step boundary.

  A context manager: the handlers before it come back on exit (a notebook's kernel keeps its
  Interrupt after training in-process).
  """

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __enter__(self) -> "_StopSignal":
    self.received: int | None = None
    before = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
    self._before = {sig: h for sig, h in before.items() if h is not None}  # None: not set from Python
    return self

  def __bool__(self) -> bool:
    return self.received is not None

  @property
  def signum(self) -> int:
    """The signal to report: the one received, or SIGTERM where only another process got one."""
    return self.received or signal.SIGTERM

  def __exit__(self, *exc_info: Any) -> None:
    for sig, handler in self._before.items():
      signal.signal(sig, handler)

  def _handle(self, signum, frame):
    del frame
    self.received = signum
    # A second one does what it did before (Ctrl-C: KeyboardInterrupt; SIGTERM: the end).
    signal.signal(signum, self._before.get(signum, signal.SIG_DFL))
    sys.stderr.write(f"\n{signal.Signals(signum).name}: stopping at the next step boundary, with a "
                     "checkpoint once a step has run (the same signal again stops at once, without one)\n")


# Processes agree on stopping every this many steps: the all-gather waits for the step to finish,
# so doing it every step would keep the host from running ahead of the devices.
AGREE_EVERY = 10


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

  def __init__(self, config: ml_collections.ConfigDict, devices: list[jax.Device] | None = None,
               class_weights: np.ndarray | None = None):
    self.config = config
    devices = jax.devices() if devices is None else devices
    self.generator = models.build_generator(config, class_weights)
    self.discriminator = (models.build_discriminator(config)
                          if config.model.discriminator != "none" else None)
    k = config.grad_accum_steps
    if config.batch_size % (k * len(devices)):
      micro = (f"config.grad_accum_steps={k} x ", ": each micro-batch is spread over all") if k > 1 else ("", "")
      raise ValueError(f"config.batch_size={config.batch_size} must be a multiple of {micro[0]}the "
                       f"{len(devices)} devices{micro[1]}")
    if k > 1 and devices[0].platform == "cpu":
      logging.warning("config.grad_accum_steps = %d on a CPU: XLA:CPU runs the convolutions inside the "
                      "micro-batch loop on a slow path, so steps take ~10x as long (docs/design.md): on a CPU "
                      "a smaller batch_size is the faster way to save memory", k)
    self.mesh = Mesh(np.asarray(devices), ("data",))
    self.data_sharding = NamedSharding(self.mesh, P("data"))
    self.replicated = NamedSharding(self.mesh, P())
    jit = functools.partial(jax.jit, in_shardings=(self.replicated, self.data_sharding),
                            out_shardings=self.replicated, donate_argnums=0)
    weights = None if class_weights is None else jnp.asarray(class_weights)
    given = dict(config=config, generator=self.generator, class_weights=weights,
                 micro_sharding=NamedSharding(self.mesh, P(None, "data")))
    self.pretrain_step = jit(functools.partial(pretrain_step, **given))
    self.gan_step = (jit(functools.partial(gan_step, discriminator=self.discriminator, **given))
                     if self.discriminator is not None else None)
    self.eval_step = jax.jit(functools.partial(eval_step, generator=self.generator),
                             in_shardings=(self.replicated, self.data_sharding, self.data_sharding),
                             out_shardings=self.replicated)

  def init_state(self) -> TrainState:
    # The weights file is read here, not in create_train_state: colorize builds the state's
    # shapes with eval_shape on machines that do not have the file.
    m = self.config.model
    encoder = pretrained.load_torchvision_resnet(m.encoder_weights, m.resnet_depth) if m.encoder_weights else None
    init = functools.partial(create_train_state, self.config, generator=self.generator,
                             discriminator=self.discriminator)
    # XLA's own RngBitGenerator: the same N(0, 0.02) init, but compiling it takes a third of the
    # time of unrolled threefry (8.8 s -> 3.4 s on CPU for a small U-Net). Dropout keeps threefry.
    key = jax.random.key(self.config.seed, impl="rbg")
    return jax.jit(init, out_shardings=self.replicated)(key, encoder=encoder)

  def step(self, state: TrainState, local_rgb: np.ndarray,
           step: int | None = None) -> tuple[TrainState, dict[str, jax.Array]]:
    """One update. The loop passes `step` (== state.step) so the host never waits for the device."""
    rgb = jax.make_array_from_process_local_data(self.data_sharding, local_rgb)
    step = int(state.step) if step is None else step
    return (self.gan_step if self.phase(step) == "gan" else self.pretrain_step)(state, rgb)

  def phase(self, step: int) -> str:
    """What the update from `step` (== state.step) trains: "train" for a model without a
    discriminator, else "pretrain" (the reconstruction loss alone) or "gan"."""
    if self.gan_step is None:
      return "train"
    return "pretrain" if step < self.config.pretrain_steps else "gan"

  def evaluate(self, state: TrainState, images: np.ndarray, features: fid.FeatureFn | None = None,
               real_stats: fid.FeatureStats | None = None) -> tuple[dict[str, float], np.ndarray]:
    """Metrics over all `images` (identical on every process) and the predictions of the first
    batch; with `features` (e.g. `fid.InceptionFeatures`) also the FID of the predictions.

    `real_stats`, the features' statistics of `images`, are computed here unless given: the
    training loop computes them once, as its held-out images do not change between evals.
    """
    bs = self.config.batch_size
    total, first_preds = None, None
    fake_stats = fid.FeatureStats()
    for start in range(0, len(images), bs):
      chunk = images[start:start + bs]
      mask = np.arange(bs) < len(chunk)
      chunk = np.concatenate([chunk, np.zeros((bs - len(chunk),) + chunk.shape[1:], chunk.dtype)])
      put = lambda x: jax.make_array_from_callback(x.shape, self.data_sharding, lambda idx: x[idx])
      m, preds = self.eval_step(state, put(chunk), put(mask))
      total = m if total is None else total.merge(m)
      n = int(mask.sum())
      if first_preds is None:
        first_preds = np.asarray(preds)[:n]
      if features is not None:
        fake_stats.update(features(np.asarray(preds)[:n]))
    summary = {k: float(v) for k, v in total.compute().items()}
    if features is not None:
      real_stats = fid.image_stats(features, images, bs) if real_stats is None else real_stats
      summary["fid"] = fid.fid(real_stats, fake_stats)
    return summary, first_preds


class DivergedError(ValueError):
  """The loss or the weights became NaN or infinite: that state is logged, not saved."""


@jax.jit
def _weights_finite(state: TrainState) -> jax.Array:
  leaves = jax.tree.leaves((state.g_params, state.g_stats, state.g_ema, state.d_params, state.d_stats))
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def _diverged(step: int, what: str) -> DivergedError:
  return DivergedError(
      f"training diverged at step {step}: {what}. Stopped without saving this state: the "
      "workdir's checkpoints, if any, are of earlier steps. Lower the learning rate "
      "(--config.optim.g.lr, --config.optim.d.lr) or compute in float32 (--config.dtype=float32) "
      "and re-run: it resumes from the latest checkpoint")


def check_finite(state: TrainState) -> None:
  """The gate before every eval and save: NaN weights would score as a black picture, could
  become the best checkpoint and would push good checkpoints out of `keep_checkpoints`."""
  if not _weights_finite(state):
    raise _diverged(int(state.step), "the weights are NaN or infinite")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains `config` in `workdir` (resuming if it has checkpoints); returns the final eval metrics.

  On return or on an exception, the metric writer and checkpoint managers are closed and the
  signal handlers from before are back, so it can be called again in the same process.
  """
  return run(config, workdir)[0]


def run(config: ml_collections.ConfigDict, workdir: str) -> tuple[dict[str, float], int | None]:
  """`train_and_evaluate`, and the signal that stopped it (None if it was not stopped by one)."""
  with contextlib.ExitStack() as resources:
    return _train_and_evaluate(config, workdir, resources)


@dataclasses.dataclass
class _Segment:
  """One run of the command in a workdir, a segment of its training: from the call of
  `train_and_evaluate`, so set-up, compiling, evals and saves count. Process 0 records its start
  and end in `workdir/runs.jsonl` (`checkpoints.append_run_record`)."""
  started: float = dataclasses.field(default_factory=time.time)
  clock: float = dataclasses.field(default_factory=time.monotonic)
  environment: dict[str, Any] = dataclasses.field(default_factory=dict)  # `host.environment`, at the start line
  end_recorded: bool = False  # its end line is written (or was tried)

  def end_record(self, step: int, ended: str, **detail: Any) -> dict[str, Any]:
    """How it ended: "complete", "max_train_minutes", "plateau", "signal" (+ "signal": its name)
    or "error" (+ "error": the exception)."""
    return {"event": "end", "time": _utc(time.time()), "step": step, "ended": ended, **detail,
            "wall_seconds": round(time.monotonic() - self.clock, 1)}


def _utc(seconds: float) -> str:
  return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).isoformat(timespec="seconds")


# What final_metrics.json holds besides the held-out scores.
FINAL_RECORDS = ("step", "complete", "best", "wall_seconds", "segments", "segments_without_end", "environment")


@dataclasses.dataclass
class _Run:
  """What a run's helpers share, so each takes one argument rather than ten. `_set_up` opens it;
  `_open_records` adds the records once there is something to train (a workdir that is already
  trained gets nothing written); the run's `resources` close them all."""
  config: ml_collections.ConfigDict
  workdir: str
  stop: _StopSignal
  trainer: Trainer
  mgr: ocp.CheckpointManager  # workdir/checkpoints
  data_iter: Any  # grain's iterator: its position is saved with every checkpoint
  eval_images: np.ndarray  # the held-out crops, the same on every process
  eval_crops: int | None  # process 0's `checkpoints.fingerprint` of them
  changed: list[str]  # the config fields that differ from the run being resumed
  keep_histogram: Callable[[], None]  # from `_class_weights`
  segment: _Segment
  best: checkpoints.BestCheckpoint | None = None
  writer: Any = None
  features: fid.FeatureFn | None = None  # FID's, with config.fid_weights
  real_stats: fid.FeatureStats | None = None  # the features' statistics of eval_images, computed once

  @property
  def final_path(self) -> str:
    return os.path.join(self.workdir, "final_metrics.json")


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                        resources: contextlib.ExitStack) -> tuple[dict[str, float], int | None]:
  """`run`'s body. Every process must make the same collective calls (`distributed`) in the same
  order or a multi-host run hangs, so what one process decides alone goes through `agree`."""
  segment = _Segment()
  config = _resolved_config(config)
  stop = resources.enter_context(_StopSignal())  # from here: a signal while compiling is a clean stop too
  run, state = _set_up(config, workdir, stop, resources, segment)
  plateau = checkpoints.at_plateau(run.workdir, config, int(state.step), run.eval_crops)
  trained, signalled, plateau = distributed.agree(_already_trained(run, state), bool(stop), plateau)
  if trained:
    return _already_trained_scores(run, int(state.step)), None
  if signalled:
    logging.info("stopped by signal before the first step; nothing was trained or written")
    return {}, stop.signum
  _open_records(run, state, resources)

  step = first_step = int(state.step)
  window, speed = [], _Throughput(step)
  deadline = time.time() + 60 * config.max_train_minutes if config.max_train_minutes else float("inf")
  summary, stopped_by = {}, "plateau" if plateau else None  # stopped there before its final report
  try:
    while step < config.total_steps and not stopped_by:
      # The first step of each phase compiles it (and the first batch starts the data workers).
      compiles = step == first_step or run.trainer.phase(step) != run.trainer.phase(step - 1)
      state, step_metrics = _train_step(run, state, step, speed, compiles)
      window.append(step_metrics)
      step += 1
      if step % config.log_every == 0 or step == config.total_steps:
        _log_window(run, window, step, speed)
        window = []
        speed.next_window(step)
      summary, stopped_by = _periodic_work(run, state, step, summary, speed, deadline)
      if stopped_by:
        break
    summary = _final_report(run, state, step, summary, stopped_by)
  except BaseException as e:  # a divergence, a full disk, a second Ctrl-C: the segment's time counts too
    error = f"{type(e).__name__}: {e}"[:1000] if str(e) else type(e).__name__
    _record_end(run, run.segment.end_record(step, "error", error=error))
    raise
  # A process that only agreed to stop (another one got the signal) reports SIGTERM's status.
  return summary, stop.signum if stopped_by == "signal" else None


def _parameters(name: str, params: Any) -> str:
  """`name`'s parameter count, "G 14.33 M parameters"; "" for a network the run does not have."""
  if params is None:
    return ""
  return f"{name} {sum(x.size for x in jax.tree.leaves(params)) / 1e6:.2f} M parameters"


def _over_devices() -> str:
  """What a global batch is split over: "over 1 device", "over 8 devices"."""
  n = jax.device_count()
  return f"over {n} device{'s' * (n != 1)}"


def _resolved_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The checked config with its references resolved and its photo sources as absolute paths,
  which config.json keeps, so a resumed run finds them from any folder."""
  config_lib.check_run_config(config)
  config = config.copy_and_resolve_references()
  config.data.train, config.data.eval = sources.absolute(config.data.train), sources.absolute(config.data.eval)
  return config


def _set_up(config: ml_collections.ConfigDict, workdir: str, stop: _StopSignal,
            resources: contextlib.ExitStack, segment: _Segment) -> tuple[_Run, TrainState]:
  """Checks the workdir and the photos (the same on every process), takes the workdir, builds the
  trainer and its state, and resumes from the latest checkpoint if there is one."""
  _check_workdir(workdir, config)
  changed, unrecorded = checkpoints.changed_fields(workdir, config)
  if edited := [k for k in changed if k not in unrecorded]:
    logging.warning("resuming with a changed config: %s", ", ".join(edited))
  if unrecorded:  # not the user's change: a newer colorjax's settings, at this config's values
    logging.info("resuming a run from a colorjax without %s: taken as this config says", ", ".join(unrecorded))
  if changed:
    checkpoints.warn_if_loss_changes(workdir, config, changed)
  logging.info("devices: %d x %s (%d processes)", jax.device_count(), jax.devices()[0].device_kind,
               jax.process_count())
  train_report, eval_report = distributed.agreed(lambda: _resolve_for_every_process(config))  # before the workdir exists
  logging.info("train data: %s", train_report.summary())
  logging.info("eval data: %s", eval_report.summary())
  distributed.check_same_files("training photos", train_report.files)
  _claim_workdir(workdir, resources)
  class_weights, keep_histogram = _class_weights(config, workdir, train_report.files)
  trainer = Trainer(config, class_weights=class_weights)
  eval_images = distributed.agreed(lambda: pipeline.eval_images(eval_report.files, config.image_size, config.eval_max_images))
  distributed.check_same_files("held-out photos", eval_images)
  data = functools.partial(pipeline.train_dataset, train_report.files, config.image_size,
                           config.batch_size // jax.process_count(), num_workers=config.data.num_workers,
                           max_zoom=config.data.max_zoom)
  logging.info("initialising the weights (compiles first)")  # 13 s of make demo on 2 CPU cores
  state = trainer.init_state()
  k = config.grad_accum_steps
  logging.info("model: %s; %s%s; %s compute, global batch %d %s%s", models.describe(config),
               _parameters("G", state.g_params), _parameters(", D", state.d_params), models.compute_dtype(config).name,
               config.batch_size, _over_devices(), f" in {k} micro-batches of {config.batch_size // k}" if k > 1 else "")
  folder = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(folder):  # made here: removed again if the run saves nothing (a signal before the first step)
    resources.callback(cli.remove_if_empty, folder)
  mgr = checkpoints.open_checkpoints(folder, config.keep_checkpoints)
  resources.callback(mgr.close)
  state, data_iter = _resume(mgr, state, data, config, changed)
  # Process 0's: a host that decodes a photo differently must not reset the best alone.
  eval_crops = distributed.from_process_0(checkpoints.fingerprint(eval_images) if jax.process_index() == 0 else None)
  run = _Run(config=config, workdir=workdir, stop=stop, trainer=trainer, mgr=mgr, data_iter=data_iter,
             eval_images=eval_images, eval_crops=eval_crops, changed=changed, keep_histogram=keep_histogram,
             segment=segment)
  return run, state


def _check_workdir(workdir: str, config: ml_collections.ConfigDict) -> None:
  """Refuses a workdir that cannot be one, before anything is read or made."""
  for field in ("train", "eval"):
    for part in sources.parts(config.data[field]):
      kind, _, folder = part.partition(":")
      if kind == "folder" and folder and os.path.relpath(
          os.path.realpath(workdir), os.path.realpath(folder)).split(os.sep)[0] != os.pardir:
        raise ValueError(f"workdir {workdir} is inside config.data.{field}'s photo folder {folder}: the sample "
                         "pictures it writes would be read as photos when the run resumes; give a --workdir outside it")
  if "://" in workdir:
    raise ValueError(f"workdir {workdir}: give a local path; mount a bucket with gcsfuse first "
                     "(launch/tpu_vm.sh and the Colab notebook do that for gs:// work directories)")
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ValueError(f"workdir {workdir} is a file, not a directory")
  if os.path.exists(os.path.join(workdir, checkpoints.EXPORTED_FILE)):
    raise ValueError(f"{workdir} holds a model exported for colorizing, not a run: train in another --workdir "
                     "(training here would start afresh and replace the model at its first eval)")


def _claim_workdir(workdir: str, resources: contextlib.ExitStack) -> None:
  """Makes the workdir (removed again if the run fails before it writes there) and checks that
  it can be written to and that every process sees the same folder, takes its lock (process 0,
  for all) and removes the saves a kill cut short, before any process lists the checkpoints."""
  cli.check_writable(workdir, "--workdir", resources.callback)
  distributed.check_shared_folder(workdir)
  is_main = jax.process_index() == 0
  busy, = distributed.agree(is_main and not _lock_workdir(workdir, resources))  # every process stops, not only 0
  if busy:
    raise ValueError(f"another training is running in {workdir} (it holds the folder's lock): "
                     "wait for it or stop it, or give another --workdir")
  # Before any process lists the checkpoints: agreed() waits for process 0.
  distributed.agreed(lambda: checkpoints.remove_unfinished_saves(workdir) if is_main else None)


def _lock_workdir(workdir: str, resources: contextlib.ExitStack) -> bool:
  """One training per workdir: two would save over each other's checkpoints. The lock is on the
  folder itself, so no file is created, and it goes with the process, even on kill -9. False if
  another process holds it."""
  fd = os.open(workdir, os.O_RDONLY)
  resources.callback(os.close, fd)  # closing releases the lock
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    return False
  except OSError as e:  # a file system without flock (some FUSE mounts)
    logging.warning("cannot lock %s (%s): make sure no other training uses it", workdir, e)
  return True


def _resume(mgr: ocp.CheckpointManager, state: TrainState, data: Callable[[int], Any],
            config: ml_collections.ConfigDict, changed: list[str]) -> tuple[TrainState, Any]:
  """The state and the data iterator (`data(seed)` builds one) of the latest checkpoint, or
  `state` and a new iterator when there is none; a saved position that does not fit the
  pipeline is replaced by a new order, with a warning."""
  data_iter = iter(data(config.seed))
  # Process 0's view of the latest complete step, for all: a host whose file system cache has
  # not seen the newest commit file yet would otherwise restore another step.
  step = distributed.from_process_0(mgr.latest_step())
  if step is None:
    return state, data_iter
  workdir = os.path.dirname(str(mgr.directory))
  if misfits := checkpoints.misfits(mgr, state, step):
    raise ValueError(f"the checkpoints in {workdir} do not fit this config (changed: "
                     f"{', '.join(changed) or 'none'}; {misfits}): train it in another --workdir, "
                     f"or resume with the config in {os.path.join(workdir, 'config.json')}")
  state = checkpoints.restore_state(mgr, state, step)
  logging.info("resumed from %s at step %d", mgr.directory, int(state.step))
  # grain's saved position has the structure of the pipeline it was saved from, which worker
  # processes (data.num_workers) change, and there is one per training process.
  saved = os.path.join(str(mgr.directory), str(step), "data")
  try:
    if not checkpoints.data_position_fits(saved, data_iter.get_state()):
      raise ValueError("it has a position for another number of worker processes")
    mgr.restore(step, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(data_iter)))
  except (KeyError, ValueError, IndexError) as e:
    saved_by = checkpoints.saved_process_count(saved)
    why = (f"it was saved by {saved_by} processes, this run has {jax.process_count()}"
           if saved_by not in (None, jax.process_count()) else "was data.num_workers changed?")
    logging.warning("the data position in the checkpoint does not fit this pipeline (%s; %s: %s), so "
                    "the photos are drawn in a new order (seed %d + step)", why, type(e).__name__, e, config.seed)
    data_iter = iter(data(config.seed + int(state.step)))
  return state, data_iter


def _already_trained(run: _Run, state: TrainState) -> bool:
  """This process's view (to agree on) of whether the workdir holds a finished run's scores: of
  total_steps, or of a `stop_on_plateau` stop that would stop it again at this step."""
  converged = checkpoints.converged(run.workdir, run.config, int(state.step), run.eval_crops)
  return os.path.exists(run.final_path) and (int(state.step) >= run.config.total_steps or converged)


def _already_trained_scores(run: _Run, step: int) -> dict[str, float]:
  """The scores in the final_metrics.json of an already trained workdir, saying why there is
  nothing to do: re-running a finished command is a no-op, not a new run."""
  config = run.config
  if step < config.total_steps:
    logging.info("%s stopped at step %d, where its held-out %s had not improved for %d evals "
                 "(stop_on_plateau): nothing to do; raise config.patience or set "
                 "config.stop_on_plateau=False to train on", run.workdir, step,
                 config.best_metric, config.patience)
  else:
    logging.info("%s is already trained to step %d (total_steps %d): nothing to do; its scores are in %s",
                 run.workdir, step, config.total_steps, run.final_path)
  with open(run.final_path) as f:
    return {k: v for k, v in json.load(f).items() if k not in FINAL_RECORDS}


def _open_records(run: _Run, state: TrainState, resources: contextlib.ExitStack) -> None:
  """Opens what a run that trains writes besides its checkpoints (the class histogram, the best
  checkpoint, samples, metrics, config.json, TensorBoard's HParams and the start line in
  runs.jsonl), and FID's features."""
  config, is_main = run.config, jax.process_index() == 0
  # First: a file that is not pytorch-fid's weights is refused before anything is written.
  if config.fid_weights and len(run.eval_images) < 2:  # else the first eval would end the run
    raise ValueError(f"config.fid_weights: FID needs at least 2 held-out photos, the eval set has "
                     f"{len(run.eval_images)}: give config.data.eval more photos")
  run.features = fid.InceptionFeatures.from_file(config.fid_weights) if config.fid_weights else None
  run.real_stats = fid.image_stats(run.features, run.eval_images, config.batch_size) if run.features else None
  run.keep_histogram()
  run.best = checkpoints.BestCheckpoint(run.workdir, config, run.changed, run.eval_crops)
  resources.callback(run.best.mgr.close)
  os.makedirs(os.path.join(run.workdir, "samples"), exist_ok=True)
  run.writer = writers.create_writer(run.workdir, is_main, int(state.step))
  resources.callback(run.writer.close)
  if is_main:
    checkpoints.write_config(run.workdir, config)
    if int(state.step) == 0:  # TensorBoard's HParams tab: the config of the run
      run.writer.write_hparams({k: v if isinstance(v, (bool, int, float, str)) else str(v)
                                for k, v in checkpoints.flat(config).items()})
    run.segment.environment = host.environment(models.compute_dtype(config).name)
    checkpoints.append_run_record(run.workdir, {
        "event": "start", "time": _utc(run.segment.started), "step": int(state.step),
        "total_steps": config.total_steps, "config_changed": run.changed, "command": sys.orig_argv, "cwd": os.getcwd(),
        "environment": run.segment.environment})


def _train_step(run: _Run, state: TrainState, step: int, speed: _Throughput, compiles: bool
                ) -> tuple[TrainState, dict[str, jax.Array]]:
  """One update on the next batch. A step that `compiles` is timed apart, with a sync before and
  after (twice a run), so that img/s is the speed of training alone."""
  if compiles:
    jax.block_until_ready(state)
    started = time.time()
    logging.info("step %d: compiling the %s step", step + 1, run.trainer.phase(step))
  try:
    batch = next(run.data_iter)
  except ValueError as e:  # grain: most photos drawn could not be read
    raise ValueError(f"config.data.train {run.config.data.train}: more than "
                     f"{pipeline.UNREADABLE_RAISE_RATIO:.0%} of the photos drawn could not be read "
                     f"(each is named in a 'skipping' line above); grain says: {e}") from e
  state, step_metrics = run.trainer.step(state, batch, step)
  if compiles:
    jax.block_until_ready(step_metrics)
    speed.compiled(seconds := time.time() - started)
    logging.info("step %d: compiled and ran in %.1f s", step + 1, seconds)
  return state, step_metrics


def _log_window(run: _Run, window: list[dict[str, jax.Array]], step: int, speed: _Throughput) -> None:
  """The log line and train/ scalars of the steps since the last log: their mean losses and
  img/s. A NaN or infinite mean stops the run (`DivergedError`) before a save can keep it."""
  config = run.config
  fetched = jax.device_get(window)
  scalars = {k: float(np.mean([m[k] for m in fetched if k in m])) for k in set().union(*fetched)}
  rate, line = speed.report(step, config.total_steps, config.batch_size)
  logging.info("step %d/%d [%s] %s | %s", step, config.total_steps, run.trainer.phase(step - 1),
               " ".join(f"{k}={v:.4f}" for k, v in sorted(scalars.items())), line)
  run.writer.write_scalars(step, {**{f"train/{k}": v for k, v in scalars.items()},
                                  **({"train/img_per_s": rate} if rate else {})})
  if bad := sorted(k for k, v in scalars.items() if not np.isfinite(v)):
    raise _diverged(step, f"{', '.join(bad)} became NaN or infinite (mean of steps {speed.step + 1}-{step})")


def _periodic_work(run: _Run, state: TrainState, step: int, summary: dict[str, float],
                   speed: _Throughput, deadline: float) -> tuple[dict[str, float], str | None]:
  """What follows step `step` on its schedule: the held-out eval, the checkpoint, and whether to
  stop (a signal, max_train_minutes, a plateau), which all processes agree on and which saves
  first. Returns the latest held-out scores and why training stops (None: it goes on)."""
  config, last = run.config, step == run.config.total_steps
  scheduled = step % config.eval_every == 0 or last
  saves = step % config.checkpoint_every == 0 or last
  plateau = False
  if scheduled or saves:
    jax.block_until_ready(state)  # the queued steps finish first: their time is training time
    events_start = time.time()
    if scheduled:
      summary = _evaluate_and_log(run, state, step)
      plateau = _record_best(run, state, summary, step)
    if saves:
      _save(run.mgr, state, run.data_iter)
    speed.event(time.time() - events_start, evaluated=scheduled)
  signalled = out_of_time = False
  if not last and (jax.process_count() == 1 or step % AGREE_EVERY == 0):
    signalled, out_of_time = distributed.agree(bool(run.stop), time.time() > deadline)
  if out_of_time and not signalled and not scheduled:  # the scores of where it stopped
    summary = _evaluate_and_log(run, state, step)
    _record_best(run, state, summary, step, scheduled=False)
  if not (signalled or out_of_time or (plateau and config.stop_on_plateau and not last)):
    return summary, None
  _save(run.mgr, state, run.data_iter)
  if signalled:
    logging.info("stopped by signal at step %d; checkpoint saved. Re-run the same command to resume.", step)
    return summary, "signal"
  if out_of_time:
    logging.info("max_train_minutes (%g) spent at step %d of %d: checkpoint saved, held-out scores "
                 "above. Re-run the same command to train on.", config.max_train_minutes, step,
                 config.total_steps)
    return summary, "max_train_minutes"
  return summary, "plateau"


def _record_best(run: _Run, state: TrainState, summary: dict[str, float], step: int, scheduled: bool = True) -> bool:
  """Gives an eval to the best checkpoint and logs its record (also one off the schedule, where
  time ran out, which may become the best); True on a plateau. An eval replayed after a resume
  (the record counted later ones) logs no record: it holds a later best than this step had."""
  plateau = run.best.update(state, summary, step, scheduled=scheduled)
  r = run.best.record
  if step >= r.get("last_eval", -1):
    run.writer.write_scalars(step, {f"eval/best_{r['metric']}": r["value"],
                                    "eval/evals_since_best": r["evals_since_best"]})
  if plateau:
    logging.info("held-out %s has not improved for %d evals (best %.4f at step %d): training has "
                 "converged%s", r["metric"], r["evals_since_best"], r["value"], r["step"],
                 "; stopping (stop_on_plateau)" if run.config.stop_on_plateau else "")
  return plateau


def _save(mgr: ocp.CheckpointManager, state: TrainState, data_iterator: Any) -> None:
  """`checkpoints.save`, never of NaN weights (`check_finite`)."""
  check_finite(state)
  checkpoints.save(mgr, state, data_iterator)


def _final_report(run: _Run, state: TrainState, step: int, summary: dict[str, float],
                  stopped_by: str | None) -> dict[str, float]:
  """Waits for the saves, scores a run resumed at its end, writes final_metrics.json, which
  a signal leaves out unless the run was complete, and ends the segment's record in runs.jsonl.
  final_metrics.json adds the training's wall time over the segments recorded and this one's
  environment. Returns the final held-out scores."""
  run.mgr.wait_until_finished()
  run.writer.flush()
  complete = step >= run.config.total_steps
  if not summary and (complete or stopped_by == "plateau"):  # resumed there, without that run's final scores
    # Its eval may have been logged before the run was stopped (its picture is written last):
    # then it is not logged twice, the same scores at the same step.
    logged = os.path.exists(os.path.join(run.workdir, "samples", _sample_name(step)))
    summary = _evaluate_and_log(run, state, step, log=not logged)
  _prune_samples(run, step)  # with the best of the last eval: that eval kept the one before
  if jax.process_index() != 0:
    return summary
  history = checkpoints.read_run_records(run.workdir)
  ended = "complete" if complete else stopped_by
  detail = {"signal": signal.Signals(run.stop.signum).name} if ended == "signal" else {}
  end = run.segment.end_record(step, ended, **detail)
  # The end line first: killed between the two writes, a re-run (finding no final_metrics.json)
  # writes both again; the other way round it found the run done, its end line never written.
  _record_end(run, end)
  if complete or stopped_by != "signal":  # a signal leaves no time for a final eval
    final = {"step": step, "complete": complete, **summary, "best": run.best.record,
             **checkpoints.time_spent([*history, end]), "environment": run.segment.environment}
    shards.write_json(run.final_path, final)
    best = run.best.record
    logging.info("%s at step %d/%d after %s of training over %d run%s;%s held-out scores in %s",
                 "done" if complete else f"stopped ({ended})", step, run.config.total_steps,
                 _format_duration(final["wall_seconds"]), final["segments"], "s" * (final["segments"] != 1),
                 f" best checkpoint: step {best['step']} ({best['metric']} {best['value']:.4g});"
                 if best["value"] is not None else "", run.final_path)
  return summary


def _record_end(run: _Run, end: dict[str, Any]) -> None:
  """Appends the segment's `end` line to runs.jsonl, once, on process 0."""
  if jax.process_index() == 0 and not run.segment.end_recorded:
    run.segment.end_recorded = True
    checkpoints.append_run_record(run.workdir, end)


def resolve_data(config: ml_collections.ConfigDict) -> tuple[sources.ScanReport, sources.ScanReport]:
  """The training and held-out photos (`config_lib.held_out_share`). A `data.eval` that shares
  photos with `data.train` is said to: its scores, best checkpoint and plateau are not held-out ones."""
  share = config_lib.held_out_share(config)
  for held, trained in itertools.product(sources.parts(config.data.eval), sources.parts(config.data.train)):
    if sources.overlap(held, trained):
      logging.warning("config.data.eval %s shares photos with config.data.train %s: the held-out scores, the best "
                      "checkpoint and the plateau are measured on photos the run trains on; give a source "
                      "outside it, or leave data.eval empty (data.eval_fraction holds out a share)", held, trained)
  held_out = (sources.resolve(config.data.eval, "all", 0.0, setting="config.data.eval") if config.data.eval
              else sources.resolve(config.data.train, "eval", share, setting="config.data.train",
                                   hint="raise config.data.eval_fraction, or set config.data.eval"))
  # Folders that cannot be listed were named with the held-out split of the same source.
  return sources.resolve(config.data.train, "train", share, warn=bool(config.data.eval), setting="config.data.train",
                         hint="lower config.data.eval_fraction"), held_out


def _resolve_for_every_process(config: ml_collections.ConfigDict) -> tuple[sources.ScanReport, sources.ScanReport]:
  """`resolve_data` for a run of several processes, which each train on their own share."""
  train_report, eval_report = resolve_data(config)
  if len(train_report.files) < jax.process_count():
    raise ValueError(f"{len(train_report.files)} training photos for {jax.process_count()} processes: "
                     "each process trains on its own share, so each needs one at least")
  return train_report, eval_report


def _uses_class_weights(config: ml_collections.ConfigDict) -> bool:
  return bool(config.loss.color_weighted or (config.model.num_classes and config.loss.rebalance))


def read_class_weights(config: ml_collections.ConfigDict, workdir: str) -> np.ndarray | None:
  """The per-ab-class weights of a run's loss, from its `workdir/ab_histogram.json`; None when
  the loss uses none."""
  if not _uses_class_weights(config):
    return None
  path = os.path.join(workdir, checkpoints.HISTOGRAM_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} is missing: a run with class weights writes it when training starts")
  with open(path) as f:
    return class_weights_from_counts(config, np.asarray(json.load(f)["counts"]))


def class_weights_from_counts(config: ml_collections.ConfigDict, counts: np.ndarray) -> np.ndarray:
  """The loss's per-class weights from the training photos' ab histogram `counts`."""
  if not config.model.num_classes:
    return ab_bins.inverse_frequency_weights(counts)
  share = config.loss.get("rebalance_offset")
  if share is None:  # the config.json of a run from before the field: +1e5 of the pixels it counted
    share = 1e5 / counts.sum()
  return ab_bins.rebalance_weights(counts, share)


def _class_weights(config: ml_collections.ConfigDict, workdir: str, files: Sequence[Any]
                   ) -> tuple[np.ndarray | None, Callable[[], None]]:
  """Per-ab-class weights from the training set's colour histogram, when the loss uses them,
  and a function that keeps that histogram in `workdir/ab_histogram.json` (called once the run
  is known to fit the workdir), so a resumed run (and colorize, for `model.prior_correction`)
  uses the same weights.

  The histogram is counted once, on centre crops of `data.stats_images` training photos drawn
  from all sources (`pipeline.eval_images`).
  """
  path = os.path.join(workdir, checkpoints.HISTOGRAM_FILE)
  if not _uses_class_weights(config) or os.path.exists(path):
    return read_class_weights(config, workdir), lambda: None
  crops = pipeline.eval_images(files, config.image_size, config.data.stats_images)
  counts = ab_bins.histogram(color.rgb_uint8_to_model(crop, np)[1] for crop in crops)

  def keep() -> None:
    if jax.process_index() == 0:  # every process counts the same photos; one writes them down
      shards.write_json(path, {"images": len(crops), "image_size": config.image_size, "counts": counts.tolist()})

  return class_weights_from_counts(config, counts), keep


def _evaluate_and_log(run: _Run, state: TrainState, step: int, log: bool = True) -> dict[str, float]:
  """Scores `state` on the held-out photos: a console line, and with `log` eval/ scalars and a
  sample picture."""
  check_finite(state)
  images = run.eval_images
  summary, preds = run.trainer.evaluate(state, images, run.features, run.real_stats)
  logging.info("eval @ %d on %d photos: PSNR %.2f dB (no colour: %.2f), SSIM %.4f (no colour: %.4f), "
               "colourfulness %.1f (real: %.1f), ab L1 %.4f%s", step, len(images), summary["psnr"],
               summary["gray_psnr"], summary["ssim"], summary["gray_ssim"], summary["colorfulness"],
               summary["real_colorfulness"], summary["l1"],
               "".join(f", {name} {summary[key]:.3f}" for key, name in
                       (("pixel_accuracy", "pixel accuracy"), ("fid", "FID")) if key in summary))
  if not log:
    return summary
  run.writer.write_scalars(step, {f"eval/{k}": v for k, v in summary.items()})
  grid = _sample_grid(images[:len(preds)][:8], preds[:8])
  if _tensorboard_gets_sample(run.config, step):
    run.writer.write_images(step, {"samples": grid[None]})
  if jax.process_index() == 0:
    _write_sample(grid, os.path.join(run.workdir, "samples", _sample_name(step)))
  _prune_samples(run, step)
  return summary


def _tensorboard_gets_sample(config: ml_collections.ConfigDict, step: int) -> bool:
  """Whether the eval of `step` writes its sample picture to TensorBoard too: every eval, or
  with more evals in the run than `tensorboard_samples`, those of every k-th `eval_every` step
  (k the fewest that keeps to it) and the last step. Event files cannot be pruned, so this bounds
  what a long run's pictures add to them; TensorBoard shows 10 of a tag's pictures anyway unless
  started with `--samples_per_plugin images=N`."""
  evals = -(-config.total_steps // config.eval_every)
  stride = -(-evals // config.tensorboard_samples) if config.tensorboard_samples else 1
  return stride == 1 or step == config.total_steps or step % (stride * config.eval_every) == 0


def _sample_name(step: int) -> str:
  return f"step_{step:07d}.png"


def _sample_step(name: str) -> int | None:
  """The step of a sample picture colorjax named (`_sample_name`), None for any other name."""
  m = re.fullmatch(r"step_([0-9]+)\.png", name)
  return int(m[1]) if m and _sample_name(int(m[1])) == name else None


def _prune_samples(run: _Run, step: int) -> None:
  """`_keep_samples` in the run's samples folder, on process 0, with the best checkpoint's step."""
  if jax.process_index() == 0 and run.config.keep_samples:
    _keep_samples(os.path.join(run.workdir, "samples"), step, run.config.keep_samples, run.best.record["step"])


def _keep_samples(folder: str, step: int, keep: int, best_step: int | None) -> None:
  """Deletes the sample pictures up to `step` but the newest `keep` and the best checkpoint's.
  Those of later steps are a killed run's, of steps this run trains again and writes over, so a
  resumed run ends with the pictures of one that was not stopped. Only names colorjax gives are
  deleted; a deletion that fails is a warning."""
  try:
    with os.scandir(folder) as entries:
      found = {s: e.path for e in entries
               if (s := _sample_step(e.name)) is not None and e.is_file(follow_symlinks=False)}
  except OSError as e:
    logging.warning("could not list the sample pictures in %s (%s)", folder, e)
    return
  kept = set(sorted(s for s in found if s <= step)[-keep:]) | {best_step}
  for s, path in sorted(found.items()):
    if s <= step and s not in kept:
      try:
        os.remove(path)
      except FileNotFoundError:
        pass
      except OSError as e:
        logging.warning("could not remove the sample picture %s (%s)", path, e)


def _write_sample(grid: np.ndarray, path: str) -> None:
  """Whole or not at all; a picture to look at that cannot be written (a full disk) is a
  warning, so the run goes on to the checkpoint, which says what is wrong if it fails too."""
  try:
    with shards.local_path_for(path) as tmp:
      Image.fromarray(grid).save(tmp, format="PNG")
  except OSError as e:
    logging.warning("could not write the sample picture %s (%s)", path, e)


def main(argv: list[str]) -> None:
  del argv
  cli.quiet_console()
  try:
    distributed.initialize()  # before JAX touches a device, so the mesh spans every process
  except ValueError as e:  # COLORJAX_* settings that do not go together
    cli.exit_with_error(e)
  host.keep_freed_memory()
  config = cli.loaded_config()
  workdir = flags.FLAGS.workdir or os.path.join("runs", cli.config_name())
  try:
    _, stopped_by = run(config, workdir)
  except (ValueError, FileNotFoundError) as e:  # a bad config, source or workdir: the message says which
    cli.exit_with_error(e)
  except jax.errors.JaxRuntimeError as e:
    cli.exit_if_out_of_memory(e, f"config.batch_size (now {config.batch_size} {_over_devices()}) or "
                                 f"config.image_size (now {config.image_size}), or raise config.grad_accum_steps "
                                 f"(now {config.grad_accum_steps}) to train the same batch in micro-batches",
                              ": a run with a checkpoint resumes from it")
    raise
  except OSError as e:
    if e.errno not in (errno.ENOSPC, errno.EDQUOT):
      cli.exit_with_error(e)
    # What was saved before is whole (checkpoints are committed last).
    cli.exit_with_error(e, f"{e}; once there is space, the same command resumes from the last checkpoint")
  if stopped_by:  # 128 + the signal, as if it had killed the process: a scheduler restarts the job
    sys.exit(128 + stopped_by)


if __name__ == "__main__":
  cli.define_config_flag("Config file, e.g. configs/demo.py, or a shipped config's name, e.g. demo")
  flags.DEFINE_string("workdir", "", "Checkpoints, logs and samples (default: runs/<config name>)")
  flags.mark_flags_as_required(["config"])
  logging.getLogger().setLevel(logging.INFO)
  cli.run(main, flags_parser=lambda argv: cli.parse_config_flags(flags.FLAGS, argv))
