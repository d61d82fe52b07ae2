"""Several trained runs on the same held-out photos, as one markdown table for the README.

    python -m colorjax.compare runs/demo runs/regress_resnet18 --data folder:/photos/val

Every run is scored by `colorjax.evaluate` on the same centre crops (same protocol, same
photos); the no-colour baseline and the real photos' colourfulness close the table, since a
run means something only by its margin over them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from absl import app, flags

from colorjax import cli, evaluate, fid, metrics, models
from colorjax.colorize import CHECKPOINT_HELP, Colorizer, parse_flags, read_run
from colorjax.data import shards

COLUMNS = (*(c for c in evaluate.COLUMNS if c[0] != "mse"),  # README-sized
           ("over_no_colour", "PSNR over no colour (95 % CI)", "{}"), ("over_first", "PSNR over the first run", "{}"))
LEADING = (("run", "run"), ("system", "system"), ("steps", "steps"))


def run_labels(workdirs: Sequence[str]) -> list[str]:
  """Each run's name in the table: its folder's name, with as many parent folders as it takes to
  tell it from the others (`a/run`, `b/run`, not `run` twice); a workdir given twice is numbered."""
  parts = []
  for workdir in workdirs:
    path = os.path.normpath(workdir)
    if os.path.basename(path) in ("", ".", ".."):
      path = os.path.abspath(path)
    parts.append(path.split(os.sep))
  depth = [1] * len(parts)
  while True:
    labels = ["/".join(p[-d:]) for p, d in zip(parts, depth)]
    clashing = [i for i, label in enumerate(labels)  # with another folder: the same one twice is numbered
                if any(labels[j] == label and parts[j] != parts[i] for j in range(len(labels)))
                and depth[i] < len(parts[i])]
    if not clashing:
      break
    for i in clashing:
      depth[i] += 1
  return [label if labels[:i].count(label) == 0 else f"{label} ({labels[:i].count(label) + 1})"
          for i, label in enumerate(labels)]


def compare(workdirs: Sequence[str], data: str, split: str = "all", image_size: int = 256,
            batch_size: int = 16, checkpoint: str = "", features: fid.FeatureFn | None = None) -> str:
  """The markdown table (with a line saying which photos) of `workdirs` scored on `data`.

  Every workdir, its weights and `data` are checked before any run is scored: a typo in the
  last workdir or its damaged checkpoint costs seconds, not the minutes of scoring the others.
  `split="eval"` splits `data` as the runs' training split their data (`evaluate.held_out_fraction`: a shards: run by its
  manifest's fraction); runs that held out different shares are refused, since some of
  "their" held-out photos would be another run's training set.
  """
  runs = [read_run(workdir, checkpoint) for workdir in workdirs]  # each checkpoint resolved (and warned of) once
  configs = [config for config, _, _ in runs]
  fraction, which = 0.0, split
  for config, workdir in zip(configs, workdirs):
    evaluate.warn_if_trained_on(config, workdir, data, split)
  if split == "eval":
    held_out = [evaluate.held_out_fraction(config, workdir) for config, workdir in zip(configs, workdirs)]
    fraction, origin = held_out[0]
    for workdir, (other, other_origin) in zip(workdirs, held_out):
      if other != fraction:
        raise ValueError(f"{workdir} held out eval_fraction {other:g} of its training data ({other_origin}), "
                         f"{workdirs[0]} {fraction:g} ({origin}): --split eval needs runs with the same split")
    if len({o for _, o in held_out}) > 1:
      origin = "each run's training data"
    which = f"eval: eval_fraction {fraction:g}, from {origin}"
  photos = evaluate.resolve_scored(data, split, fraction)
  # All weights loaded before the first score: a damaged checkpoint is found in seconds, too.
  colorizers = [Colorizer.from_workdir(workdir, resolved) for workdir, (_, resolved, _) in zip(workdirs, runs)]
  rows: list[dict[str, Any]] = []
  first = last = None
  for label, colorizer in zip(run_labels(workdirs), colorizers):
    last = evaluate.evaluate(colorizer, photos, image_size, batch_size, features, label)
    # Paired over the same photos: a difference of a few hundredths of a dB may be which photos these are.
    gains = {"over_no_colour": metrics.format_gain(last.psnr_gain())}
    if first is not None:
      gains["over_first"] = metrics.format_gain(last.psnr_gain(over=first))
    first = first or last
    rows.append({"run": label, "system": models.describe(colorizer.config), "steps": colorizer.step,
                 **last.summary()["model"], **gains})
  summary = last.summary()  # the baseline and ground truth are the same for every run
  rows += [{"run": label, **summary[system]} for system, label in evaluate.LABELS.items()]
  line = (f"{last.counts()} of `{data}` [{which}], {image_size} px centre crops, RGB uint8, "
          + (f"{checkpoint} checkpoints" if checkpoint else "each run's default checkpoint")
          + "; PSNR gains are paired over the photos, ± the half-width of their 95 % confidence interval")
  note = "" if features else "\n\n" + evaluate.FID_MISSING
  return line + "\n\n" + evaluate.format_table(rows, LEADING, COLUMNS) + note


def main(argv: list[str]) -> None:
  if len(argv) < 2:
    raise app.UsageError("give the workdirs of the runs to compare")
  cli.cache_compilations()
  try:
    if FLAGS.out and os.path.isdir(FLAGS.out):
      raise ValueError(f"--out {FLAGS.out} is a directory: give the markdown file to write")
    if FLAGS.out:
      if not FLAGS.overwrite:
        evaluate.refuse_existing(FLAGS.out)
      cli.check_writable(os.path.dirname(os.path.abspath(FLAGS.out)), "--out")
    features = fid.InceptionFeatures.from_file(FLAGS.fid_weights) if FLAGS.fid_weights else None
    table = compare(argv[1:], FLAGS.data, FLAGS.split, FLAGS.image_size, FLAGS.batch_size,
                    FLAGS.checkpoint, features)
  except (FileNotFoundError, ValueError, ImportError) as e:
    cli.exit_with_error(e)
  print(table)
  if FLAGS.out:
    try:
      with shards.local_path_for(FLAGS.out) as tmp, open(tmp, "w") as f:
        f.write(table + "\n")
    except OSError as e:
      cli.exit_with_error(e, f"cannot write {FLAGS.out} ({e.strerror or e})")


FLAGS = flags.FLAGS

if __name__ == "__main__":
  flags.DEFINE_string("data", None, "Held-out photos: folder:PATH, shards:DIR or tfds:NAME (comma-joined)")
  flags.DEFINE_enum("split", "all", ["all", "eval"], "all photos of --data, or only the share "
                    "the runs held out from training (their shards' eval_fraction, or data.eval_fraction)")
  flags.DEFINE_string("checkpoint", "", CHECKPOINT_HELP + ", for every run")
  flags.DEFINE_integer("image_size", 256, "Short side resize and centre crop (the seeds' size: 256)",
                       lower_bound=metrics.SSIM_WINDOW)
  flags.DEFINE_integer("batch_size", 16, "Crops per device call", lower_bound=1)
  flags.DEFINE_boolean("overwrite", False, "Replace --out if it exists")
  flags.DEFINE_string("fid_weights", "", "pytorch-fid Inception weights (.pth/.npz/.safetensors) for FID")
  flags.DEFINE_string("out", "", "Also write the table to this markdown file")
  flags.mark_flags_as_required(["data"])
  cli.run(main, flags_parser=parse_flags)
