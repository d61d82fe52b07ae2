"""A run's checkpoints and records in its workdir: the orbax checkpoints (`checkpoints/` with
the data position, `best/`), `config.json`, `best.json`, `runs.jsonl` (when, on what and how
long each run of the command trained), and what a resumed run checks against them (a changed
config, a checkpoint that does not fit, a run that already converged).

`train.train_and_evaluate` writes them; colorize, serve and evaluate read the checkpoints back.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import shutil
import sys
import types
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import flax
import grain
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from colorjax.data import shards, sources

if TYPE_CHECKING:
  from colorjax.train import TrainState


def open_checkpoints(directory: str, max_to_keep: int | None = None) -> ocp.CheckpointManager:
  """The checkpoints in `directory`, for saving (`max_to_keep` given) or for reading (creates nothing).

  A step counts once its `commit_success.txt` is written (orbax's COMMIT_FILE), not when a
  temporary folder is renamed: gcsfuse, the shared workdir of a pod, cannot rename folders on
  a flat bucket. A save cut short leaves a folder without it, which every reader here skips and
  the next save of that step replaces, so readers must open checkpoints through this too.
  Saves are synchronous: grain's iterator state must be read at the step it belongs to.
  """
  _hush_abandoned_io()
  atomicity = ocp.options.AtomicityOptions(mode=ocp.options.AtomicityMode.COMMIT_FILE)
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=max_to_keep is not None,
                                         enable_async_checkpointing=False, atomicity_options=atomicity)
  return ocp.CheckpointManager(os.path.abspath(directory), options=options)


LOWER_IS_BETTER = ("l1", "mse", "fid")
# Fields that change what the held-out metric measures: a best value from before is not comparable.
EVAL_FIELDS = ("image_size", "eval_max_images", "fid_weights", "data.train", "data.eval", "data.eval_fraction",
               "ema_decay", "model.decode", "model.temperature", "model.prior_correction")
HISTOGRAM_FILE = "ab_histogram.json"
EXPORTED_FILE = "exported.json"  # in a folder `colorjax.export` wrote: a model, not a run


class BestCheckpoint:
  """Keeps the checkpoint with the best held-out metric in `workdir/best/` and notices plateaus.

  Its record (`workdir/best.json`) survives restarts, so patience counts across resumes. The
  record keeps the `EVAL_FIELDS` it was measured with, so a best from another held-out eval is
  never compared with this one, even when a resumed run died before its first eval.
  """

  def __init__(self, workdir: str, config: ml_collections.ConfigDict, changed: Sequence[str] = (),
               eval_crops: int | None = None):
    """`changed`: the config fields that differ from the run being resumed, for a record written
    before records kept their eval fields. `eval_crops`: the `fingerprint` of the held-out crops
    scored, which tells when photos added to or removed from a folder changed them."""
    self.metric, self.patience = config.best_metric, config.patience
    self.mgr = open_checkpoints(os.path.join(workdir, "best"), 1)
    self.path = os.path.join(workdir, "best.json")
    eval_fields = current_eval_fields(config, eval_crops)
    self.record = {"metric": self.metric, "value": None, "step": None, "evals_since_best": 0, "eval": eval_fields}
    if os.path.exists(self.path):
      with open(self.path) as f:
        old = json.load(f)
      if "eval" in old:
        changed = _eval_changes(old["eval"], eval_fields)
      else:
        changed = sorted(set(changed) & set(EVAL_FIELDS))
      if old.get("metric") != self.metric:
        changed.append("best_metric")
      if not changed:
        self.record.update({**old, "eval": eval_fields})
      elif old.get("value") is not None:
        logging.warning("the held-out eval changed (%s): the best checkpoint so far (%s %.4f at step %s) "
                        "is replaced at the next eval", ", ".join(changed), old.get("metric"), old["value"],
                        old.get("step"))

  def update(self, state: TrainState, summary: dict[str, float], step: int, scheduled: bool = True) -> bool:
    """Records an eval; saves `state` if it is the best so far. True once patience ran out.

    An eval off the `eval_every` schedule (where `max_train_minutes` stopped a run) can be the
    best but does not count towards patience, nor does an eval of a step counted before (a run
    resumed from a checkpoint older than its last eval runs that eval again).
    """
    value, best = summary[self.metric], self.record["value"]
    if best is None or (value < best if self.metric in LOWER_IS_BETTER else value > best):
      if step in self.mgr.all_steps():  # an earlier attempt at this step (resumed from before it)
        self.mgr.delete(step)
      save_tree(self.mgr, step, state)
      self.record.update(value=value, step=step, evals_since_best=0)
    elif scheduled and step > self.record.get("last_eval", -1):
      self.record["evals_since_best"] += 1
    replayed = step < self.record.get("last_eval", -1)  # counted evals after it: not its plateau
    if scheduled:
      self.record["last_eval"] = max(step, self.record.get("last_eval", -1))
    if jax.process_index() == 0:
      shards.write_json(self.path, self.record)
    return self.patience > 0 and not replayed and self.record["evals_since_best"] >= self.patience


def remove_unfinished_saves(workdir: str) -> None:
  """Deletes step folders without a commit file: saves cut short by a kill, which every reader
  skips and which would otherwise keep their gigabytes until a save of the same step."""
  for sub in ("checkpoints", "best"):
    folder = os.path.join(workdir, sub)
    steps = [n for n in os.listdir(folder) if n.isdigit()] if os.path.isdir(folder) else []
    for step in steps:
      if not os.path.exists(os.path.join(folder, step, "commit_success.txt")):
        logging.warning("removing %s: a save that was cut short", os.path.join(folder, step))
        try:  # housekeeping: readers skip it anyway, so a failure must not stop process 0 alone
          shutil.rmtree(os.path.join(folder, step))
        except OSError as e:
          logging.warning("could not remove %s (%s); it is skipped", os.path.join(folder, step), e)


def saved_process_count(directory: str) -> int | None:
  """How many processes saved the grain positions in `directory` (`process_I-of-N.json`), if known."""
  names = os.listdir(directory) if os.path.isdir(directory) else []
  counts = {int(m.group(1)) for n in names if (m := re.fullmatch(r"process_\d+-of-(\d+)\.json", n))}
  return counts.pop() if len(counts) == 1 else None


def data_position_fits(directory: str, fresh: Any) -> bool:
  """Whether this process's grain position saved in `directory` has the layout of a new
  iterator's `get_state()` `fresh`: lists (one entry per worker) of the same lengths. grain
  restores a position saved with another `data.num_workers` without a word, then fails at the
  first batch (IndexError). A position that cannot be read here is left to grain's restore."""
  path = os.path.join(directory, f"process_{jax.process_index()}-of-{jax.process_count()}.json")
  try:
    with open(path) as f:
      saved = json.load(f)
  except (OSError, ValueError):
    return True

  def fits(saved: Any, fresh: Any) -> bool:
    if isinstance(saved, dict) and isinstance(fresh, dict):
      return all(fits(saved[k], fresh[k]) for k in saved.keys() & fresh.keys())
    if isinstance(saved, list) and isinstance(fresh, list):
      return len(saved) == len(fresh) and all(map(fits, saved, fresh))
    return isinstance(saved, (dict, list)) == isinstance(fresh, (dict, list))
  return fits(saved, fresh)


def restore_state(mgr: ocp.CheckpointManager, state: TrainState, step: int | None = None) -> TrainState:
  """Restores `state` from `checkpoints/` step `step` (default: the latest).

  A step orbax cannot read is an `UnreadableCheckpoint`.
  """
  step = mgr.latest_step() if step is None else step
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
  return _restored(mgr, step, "state", ocp.args.StandardRestore(abstract))


def restore_fields(mgr: ocp.CheckpointManager, state: TrainState, step: int, fields: Sequence[str],
                   item: str = "state") -> dict[str, Any]:
  """Only `fields` of the `state` saved at `step`, by orbax's partial restore: inference needs
  G's weights and statistics, a seventh of what a run saves (both Adam states, D, the EMA)."""
  subset = {f: jax.tree.map(ocp.utils.to_shape_dtype_struct, getattr(state, f)) for f in fields}
  return _restored(mgr, step, item, ocp.args.PyTreeRestore(
      subset, restore_args=ocp.checkpoint_utils.construct_restore_args(subset), partial_restore=True))


def _restored(mgr: ocp.CheckpointManager, step: int, item: str, args: Any) -> Any:
  """`item` "state": a `checkpoints/` step, whose data position is another item; "default": the
  `best/` step, the state alone."""
  with _reading(mgr, step):
    if item == "default":
      return mgr.restore(step, args=args)
    return mgr.restore(step, args=ocp.args.Composite(**{item: args}))[item]


@contextlib.contextmanager
def _reading(mgr: ocp.CheckpointManager, step: int) -> Iterator[None]:
  """Errors that say step `step`'s files are damaged or gone as an `UnreadableCheckpoint`:
  tensorstore's read errors come as ValueError or as a bare Exception. Not a permission or a
  mount problem (OSError), nor out of device memory or a bug: those keep their own message, and
  no advice to delete anything."""
  try:
    yield
  except Exception as e:
    if isinstance(e, (ValueError, FileNotFoundError)) or type(e) is Exception:
      raise UnreadableCheckpoint(str(mgr.directory), step, e) from e
    raise


def _hush_abandoned_io() -> None:
  """orbax abandons a checkpoint's other reads or writes when one fails. As they end, their
  coroutines and tensorstore's callbacks report to `sys.unraisablehook` ("Event loop is closed")
  and asyncio logs their tasks' errors: ~200 tracebacks after the one error line for a damaged
  demo checkpoint, ~1700 lines for a full disk, some before the save fails in this thread. Once
  checkpoints are opened, those reports go to the debug log; others still print."""
  if getattr(sys.unraisablehook, "hushes_abandoned_io", False):
    return
  before, orbax_dir = sys.unraisablehook, os.path.dirname(ocp.__file__)

  def abandoned(u: Any) -> bool:
    if isinstance(u.object, types.CoroutineType):
      return u.object.cr_code.co_filename.startswith(orbax_dir)
    return isinstance(u.exc_value, RuntimeError) and str(u.exc_value) == "Event loop is closed"

  def hook(u: Any) -> None:
    if abandoned(u):
      logging.debug("after a failed checkpoint read or write: %s: %s", type(u.exc_value).__name__, u.exc_value)
    else:
      before(u)

  hook.hushes_abandoned_io = True
  sys.unraisablehook = hook
  logging.getLogger("asyncio").addFilter(  # a Task's, or (as the timing falls) a plain Future's
      lambda record: not record.getMessage().startswith(("Task exception was never retrieved",
                                                         "Future exception was never retrieved")))


class UnreadableCheckpoint(ValueError):
  """A committed checkpoint whose files cannot be read: damaged, or deleted while being read."""

  def __init__(self, directory: str, step: int, cause: BaseException):
    while cause.__cause__ is not None:  # orbax wraps tensorstore's error, which names the file and the fault
      cause = cause.__cause__
    first = next((line.strip() for line in str(cause).splitlines() if line.strip()), type(cause).__name__)
    if isinstance(cause, json.JSONDecodeError):  # which file, orbax does not say
      first = f"its metadata is not JSON: {first}"
    try:
      earlier = [s for s in open_checkpoints(directory).all_steps() if s < step]
    except OSError:  # the folder itself unreadable: this message still says which step failed
      earlier = []
    where = os.path.join(directory, str(step))
    if earlier:
      hint = f"move {where} out of the workdir to use step {max(earlier)}, the one before it"
    elif os.path.basename(directory) == "best":
      hint = f"delete {where} (--checkpoint latest reads the newest of checkpoints/ instead)"
    else:
      hint = f"delete {where} (or the workdir) and train again"
    super().__init__(f"checkpoint {step} in {directory} cannot be read ({first[:300]}); "
                     f"if it was damaged (e.g. by a partial copy), {hint}")
    self.step = step


def misfits(mgr: ocp.CheckpointManager, state: TrainState, step: int, item: str = "state",
            fields: Sequence[str] | None = None) -> str:
  """What differs between checkpoint `step`'s arrays and `state`'s ("" if they fit), in the
  TrainState `fields` only when given (inference reads G's; an exported model has no more).

  Read from the checkpoint's metadata, so a misfit is named before orbax starts restoring.
  `item` is "state" in `checkpoints/`, "default" in `best/`.
  """
  name = lambda path: ".".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)
  # The item's own handler: StandardCheckpointer looks for the step's metadata file inside the
  # item and warns on every resume that it "does not exist".
  with _reading(mgr, step):  # a metadata file cut short or missing: a damaged checkpoint too
    saved = ocp.PyTreeCheckpointHandler().metadata(epath.Path(mgr.directory) / str(step) / item)
  wanted = lambda key: fields is None or key.split(".", 1)[0] in fields
  saved = {name(p): tuple(m.shape) for p, m in jax.tree_util.tree_leaves_with_path(saved) if wanted(name(p))}
  mine = {name(p): tuple(x.shape) for p, x in jax.tree_util.tree_leaves_with_path(state) if wanted(name(p))}
  diffs = [f"{k} {saved.get(k, 'missing')} in the checkpoint, {mine.get(k, 'missing')} here"
           for k in sorted(set(saved) | set(mine)) if saved.get(k) != mine.get(k)]
  return "; ".join(diffs[:3]) + (f" and {len(diffs) - 3} more arrays" if len(diffs) > 3 else "")


def save_tree(mgr: ocp.CheckpointManager, step: int, tree: Any) -> None:
  """Saves `tree` as the one item of `step` (best/, an exported model), a full disk as OSError."""
  with _disk_full_as_os_error(mgr, step):
    mgr.save(step, args=ocp.args.StandardSave(tree), force=True)


def save(mgr: ocp.CheckpointManager, state: TrainState, data_iterator: Any) -> None:
  """Saves `state` and the data position at its step, unless that step is saved already. The
  trainer's `_save` checks the weights first: NaN weights are never saved."""
  step = int(state.step)
  if step in mgr.all_steps():
    return
  with _disk_full_as_os_error(mgr, step):
    mgr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                           data=grain.checkpoint.CheckpointSave(data_iterator)), force=True)


@contextlib.contextmanager
def _disk_full_as_os_error(mgr: ocp.CheckpointManager, step: int) -> Iterator[None]:
  """tensorstore reports a full disk as a ValueError ("RESOURCE_EXHAUSTED: ... [os_error_code='28']");
  as an OSError it reads as what it is, and the trainer says how to go on."""
  try:
    yield
  except ValueError as e:
    code = next((c for c in (errno.ENOSPC, errno.EDQUOT) if f"os_error_code='{c}'" in str(e)), None)
    if code is None:
      raise
    raise OSError(code, f"{os.strerror(code)} while saving checkpoint {step}",
                  os.path.join(str(mgr.directory), str(step))) from e


def changed_fields(workdir: str, config: ml_collections.ConfigDict) -> tuple[list[str], list[str]]:
  """The dotted config fields that differ from the run saved in `workdir` (none for a new run),
  and those of them its record lacks: settings the colorjax that started it did not have yet."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return [], []
  try:
    with open(path) as f:
      old = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise ValueError(f"{path} cannot be read ({e}): train in another --workdir") from e
  if not isinstance(old, dict) or not {"model", "total_steps", "data"} <= set(old):
    raise ValueError(f"{path} is not the config of a colorjax run, and training would write over it: "
                     "train in another --workdir")
  old, new = _as_now(flat(old)), flat(config)
  changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
  return changed, [k for k in changed if k not in old]


def _as_now(fields: dict[str, Any]) -> dict[str, Any]:
  """Recorded config fields with their data sources absolute, as a run records them now: runs
  before 2026-11-30 recorded them as given, often relative to where the run was started."""
  return {k: sources.absolute(v) if k in ("data.train", "data.eval") and isinstance(v, str) else v
          for k, v in fields.items()}


def flat(config: ml_collections.ConfigDict | dict[str, Any]) -> dict[str, Any]:
  """A config (or its JSON), flattened to dotted field names ("data.train")."""
  if isinstance(config, ml_collections.ConfigDict):
    config = json.loads(config.to_json())
  return flax.traverse_util.flatten_dict(config, sep=".")


def write_config(workdir: str, config: ml_collections.ConfigDict) -> None:
  shards.write_json(os.path.join(workdir, "config.json"), json.loads(config.to_json()))


RUNS_FILE = "runs.jsonl"


def append_run_record(workdir: str, record: dict[str, Any]) -> None:
  """Appends `record` as one line of `workdir/runs.jsonl`, the history of the runs of the
  command in the workdir: a "start" line when one starts training, an "end" line when it stops
  by itself (SIGKILL, the OOM killer or a lost VM leave none). Never rewritten: a line a kill
  cut short is ended first, so the new record is a line of its own. A record is not worth a run:
  one that cannot be written is a warning."""
  path = os.path.join(workdir, RUNS_FILE)
  line = (json.dumps(record) + "\n").encode()
  try:
    with open(path, "ab+") as f:
      if f.seek(0, os.SEEK_END):
        f.seek(-1, os.SEEK_END)
        if f.read(1) != b"\n":
          line = b"\n" + line
      f.write(line)
  except OSError as e:
    logging.warning("could not add the run's %s record to %s (%s)", record.get("event"), path, e)


def read_run_records(workdir: str) -> list[dict[str, Any]]:
  """The records of `workdir/runs.jsonl` (none for a workdir from before it), without lines a
  kill cut short."""
  try:
    with open(os.path.join(workdir, RUNS_FILE)) as f:
      lines = f.readlines()
  except OSError:
    return []
  records = []
  for line in lines:
    try:
      record = json.loads(line)
    except json.JSONDecodeError:
      continue
    if isinstance(record, dict):
      records.append(record)
  return records


def time_spent(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
  """The wall seconds of the runs `records` (of `read_run_records`) say ended, summed, with how
  many started and how many of those left no end (killed, so their time is not in the sum)."""
  ends = [r for r in records if r.get("event") == "end"]
  started = sum(r.get("event") == "start" for r in records)
  seconds = [r.get("wall_seconds") for r in ends]
  return {"wall_seconds": round(sum(x for x in seconds if isinstance(x, (int, float))), 1),
          "segments": started, "segments_without_end": max(started - len(ends), 0)}


def fingerprint(images: np.ndarray) -> int:
  """A 28-bit hash of uint8 `images`: small enough for `distributed.from_process_0`."""
  return int(hashlib.md5(np.ascontiguousarray(images).tobytes()).hexdigest()[:7], 16)


def current_eval_fields(config: ml_collections.ConfigDict, eval_crops: int | None = None) -> dict[str, Any]:
  """`EVAL_FIELDS` as this config sets them; `data.eval_fraction` only while it picks the eval;
  "held-out crops", the `fingerprint` of the crops scored (the photos or their decoding), if given."""
  fields = flat(config)
  current = {name: None if name == "data.eval_fraction" and config.data.eval else fields.get(name)
             for name in EVAL_FIELDS}
  if eval_crops is not None:
    current["held-out crops"] = eval_crops
  return current


def _eval_changes(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
  """The eval fields that differ; one a record from an older colorjax lacks does not count."""
  return [k for k, v in _as_now(recorded).items() if k in current and current[k] != v]


def converged(workdir: str, config: ml_collections.ConfigDict, step: int, eval_crops: int | None = None) -> bool:
  """Whether `stop_on_plateau` stopped the run at `step` and would stop it again there."""
  try:
    with open(os.path.join(workdir, "final_metrics.json")) as f:
      final = json.load(f)
  except (OSError, json.JSONDecodeError):
    return False
  return final.get("step") == step and at_plateau(workdir, config, step, eval_crops)


def at_plateau(workdir: str, config: ml_collections.ConfigDict, step: int, eval_crops: int | None = None) -> bool:
  """Whether the eval at `step` found the plateau `stop_on_plateau` stops at (best.json counted
  it): a run stopped there (a preemption at that eval) must not train on when it resumes."""
  if not (config.stop_on_plateau and config.patience):
    return False
  try:
    with open(os.path.join(workdir, "best.json")) as f:
      record = json.load(f)
  except (OSError, json.JSONDecodeError):
    return False
  same_eval = "eval" in record and not _eval_changes(record["eval"], current_eval_fields(config, eval_crops))
  return (record.get("last_eval") == step and record.get("metric") == config.best_metric and same_eval
          and record.get("evals_since_best", 0) >= config.patience)


def warn_if_loss_changes(workdir: str, config: ml_collections.ConfigDict, changed: list[str]) -> None:
  """Runs from before `loss.rebalance_offset` trained with +1e5 of the pixels they counted, and
  before `loss.smooth_l1_beta` with SmoothL1 at 110 Lab units (MSE / 2); the config files now
  say otherwise, which would change their loss unasked."""
  with open(os.path.join(workdir, "config.json")) as f:
    recorded = json.load(f).get("loss", {})
  if ("loss.smooth_l1_beta" in changed and "smooth_l1_beta" not in recorded
      and config.loss.reconstruction == "smooth_l1"):
    logging.warning("this run trained before loss.smooth_l1_beta existed, with SmoothL1 at 110 Lab units "
                    "(MSE / 2); this config's %g changes its loss: pass --config.loss.smooth_l1_beta=110 "
                    "to keep it", config.loss.smooth_l1_beta)
  path = os.path.join(workdir, HISTOGRAM_FILE)
  if ("loss.rebalance_offset" not in changed or "rebalance_offset" in recorded or not config.model.num_classes
      or not os.path.exists(path)):
    return
  with open(path) as f:
    share = 1e5 / sum(json.load(f)["counts"])
  logging.warning("this run trained before loss.rebalance_offset existed, with +1e5 of the pixels it "
                  "counted (a share of %g); this config's %g changes its loss: pass "
                  "--config.loss.rebalance_offset=%r to keep it", share, config.loss.rebalance_offset, share)
