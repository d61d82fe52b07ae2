"""Packs a trained run into a small folder to share or ship: what colorize needs, nothing else.

    python -m colorjax.export --workdir runs/quick_cpu --out models/quick_cpu [--checkpoint best]

The folder is a workdir that colorize, evaluate, serve and compare load like the run itself:
its config.json, the class histogram a rebalanced classifier decodes with, and G's inference
weights and statistics (`train.inference_fields`) as its one `best` checkpoint. The optimiser
states, D and the other weight set stay behind: the demo run's 989 MB workdir packs into 58 MB.
"""

from __future__ import annotations

import os
import shutil

from absl import app, flags

from colorjax import checkpoints, cli, interrupts
from colorjax.colorize import CHECKPOINT_HELP, Colorizer, parse_flags
from colorjax.data import shards


PARTIAL = ".colorjax-export-partial"


def export(workdir: str, out: str, checkpoint: str | int = "") -> Colorizer:
  """Writes checkpoint `checkpoint` of `workdir` (default: the run's colorize_checkpoint) as the
  model in `out`, a folder that must be new or empty; returns the exported Colorizer.

  Written to a hidden folder and moved into place at the end, so a failed or interrupted
  export leaves no half model: beside a new `out`, renamed; inside an empty one (it may be
  `.` or a link to a folder on another disk), its files moved in, config.json last (what
  makes a folder a model to colorize)."""
  out = os.path.abspath(out)
  empty = os.path.isdir(out)
  if os.path.lexists(out) and (not empty or set(os.listdir(out)) - {PARTIAL}):
    raise ValueError(f"--out {out} exists and is not an empty folder: give a new one")
  colorizer = Colorizer.from_workdir(workdir, checkpoint)
  config = colorizer.config.copy_and_resolve_references()
  config.colorize_checkpoint = "best"  # the only checkpoint there
  weights, stats = colorizer.fields
  partial = os.path.join(out, PARTIAL) if empty else out + PARTIAL
  shutil.rmtree(partial, ignore_errors=True)  # an earlier export that failed
  try:
    with interrupts.deferred():
      with checkpoints.open_checkpoints(os.path.join(partial, "best"), 1) as mgr:
        checkpoints.save_tree(mgr, colorizer.step, {weights: colorizer.variables["params"],
                                                   stats: colorizer.variables["batch_stats"]})
      checkpoints.write_config(partial, config)
      shards.write_json(os.path.join(partial, checkpoints.EXPORTED_FILE),  # training refuses such a folder
                        {"workdir": os.path.abspath(workdir), "checkpoint": colorizer.checkpoint,
                         "step": colorizer.step})
      histogram = os.path.join(workdir, checkpoints.HISTOGRAM_FILE)
      if os.path.exists(histogram):
        shutil.copy(histogram, partial)
    if not empty:
      os.rename(partial, out)
      return colorizer
    for name in sorted(os.listdir(partial), key=lambda name: name == "config.json"):
      os.rename(os.path.join(partial, name), os.path.join(out, name))
    os.rmdir(partial)
  except BaseException:
    shutil.rmtree(partial, ignore_errors=True)  # a full disk keeps none of what it took
    raise
  return colorizer


def _size(folder: str) -> int:
  return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(folder) for f in files)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  try:
    out = os.path.abspath(FLAGS.out)  # before the model loads:
    cli.check_writable(out if os.path.isdir(out) else os.path.dirname(out), "--out")
    colorizer = export(FLAGS.workdir, FLAGS.out, FLAGS.checkpoint)
  except (FileNotFoundError, ValueError) as e:
    cli.exit_with_error(e)
  except OSError as e:
    cli.exit_with_error(e, f"cannot write {FLAGS.out} ({e.strerror or e})")
  print(f"exported {FLAGS.workdir} {colorizer.checkpoint} (step {colorizer.step}) to {FLAGS.out}: "
        f"{_size(FLAGS.out) / 1e6:.1f} MB (the workdir: {_size(FLAGS.workdir) / 1e6:.0f} MB)")


FLAGS = flags.FLAGS

if __name__ == "__main__":
  flags.DEFINE_string("workdir", None, "Training workdir with config.json and checkpoints/")
  flags.DEFINE_string("out", None, "New folder for the model (a workdir colorize, evaluate and serve load)")
  flags.DEFINE_string("checkpoint", "", CHECKPOINT_HELP)
  flags.mark_flags_as_required(["workdir", "out"])
  cli.run(main, flags_parser=parse_flags)
