"""Several trained runs on the same held-out photos, as one markdown table for the README.

    python -m colorjax.compare runs/demo runs/regress_resnet18 --data folder:/photos/val

Every run is scored by `colorjax.evaluate` on the same center crops (same protocol, same
photos); the no-colour baseline and the real photos' colourfulness close the table, since a
run means something only by its margin over them.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

import ml_collections
from absl import app, flags

from colorjax import evaluate, fid
from colorjax.colorize import CHECKPOINT_HELP, Colorizer, parse_flags
from colorjax.data import shards, sources

COLUMNS = tuple(c for c in evaluate.COLUMNS if c[0] != "mse")  # README-sized
LEADING = (("run", "run"), ("system", "system"), ("steps", "steps"))


def describe(config: ml_collections.ConfigDict) -> str:
  """A run's system in a few words, e.g. `resnet_unet ResNet-18 + PatchGAN, 256 px`."""
  m = config.model
  words = [m.generator]
  if m.generator in ("resnet_unet", "resnet_colorizer"):
    words.append(f"ResNet-{m.resnet_depth}")
  if m.num_classes:
    words.append(f"{m.num_classes} classes")
  if m.discriminator != "none":
    words.append(f"+ {m.discriminator}")
  return " ".join(words) + f", {config.image_size} px"


def compare(workdirs: Sequence[str], data: str, split: str = "all", image_size: int = 256,
            batch_size: int = 16, checkpoint: str = "", features: fid.FeatureFn | None = None) -> str:
  """The markdown table (with a line saying which photos) of `workdirs` scored on `data`.

  `split="eval"` uses the first run's `data.eval_fraction`; runs that held out a different
  share are refused, since some of "their" held-out photos would be another run's training set.
  """
  rows: list[dict[str, Any]] = []
  photos, fraction, last = None, None, None
  for workdir in workdirs:
    colorizer = Colorizer.from_workdir(workdir, checkpoint)
    if photos is None:
      fraction = colorizer.config.data.eval_fraction
      photos = sources.resolve(data, split, fraction)
    elif split == "eval" and colorizer.config.data.eval_fraction != fraction:
      raise ValueError(f"{workdir} held out data.eval_fraction={colorizer.config.data.eval_fraction}, "
                       f"{workdirs[0]} {fraction}: --split eval needs runs with the same split")
    last = evaluate.evaluate(colorizer, photos, image_size, batch_size, features)
    rows.append({"run": os.path.basename(os.path.normpath(workdir)), "system": describe(colorizer.config),
                 "steps": colorizer.step, **last.summary()["model"]})
  summary = last.summary()  # the baseline and ground truth are the same for every run
  rows += [{"run": label, **summary[system]} for system, label in evaluate.LABELS.items()]
  line = (f"{last.counts()} of `{data}` [{split}], {image_size} px center crops, RGB uint8, "
          + (f"{checkpoint} checkpoints" if checkpoint else "each run's default checkpoint"))
  note = "" if features else "\n\n" + evaluate.FID_MISSING
  return line + "\n\n" + evaluate.format_table(rows, LEADING, COLUMNS) + note


def main(argv: list[str]) -> None:
  if len(argv) < 2:
    raise app.UsageError("give the workdirs of the runs to compare")
  try:
    if FLAGS.out and os.path.isdir(FLAGS.out):
      raise ValueError(f"--out {FLAGS.out} is a directory: give the markdown file to write")
    if FLAGS.out and not FLAGS.overwrite:
      evaluate.refuse_existing(FLAGS.out)
    features = fid.InceptionFeatures.from_file(FLAGS.fid_weights) if FLAGS.fid_weights else None
    table = compare(argv[1:], FLAGS.data, FLAGS.split, FLAGS.image_size, FLAGS.batch_size,
                    FLAGS.checkpoint, features)
  except (FileNotFoundError, ValueError, ImportError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  print(table)
  if FLAGS.out:
    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.out)), exist_ok=True)
    with shards.local_path_for(FLAGS.out) as tmp, open(tmp, "w") as f:
      f.write(table + "\n")


FLAGS = flags.FLAGS

if __name__ == "__main__":
  flags.DEFINE_string("data", None, "Held-out photos: folder:PATH, shards:DIR or tfds:NAME (comma-joined)")
  flags.DEFINE_enum("split", "all", ["all", "eval"], "all photos of --data, or only the share "
                    "held out from training by data.eval_fraction")
  flags.DEFINE_string("checkpoint", "", CHECKPOINT_HELP + ", for every run")
  flags.DEFINE_integer("image_size", 256, "Short side resize and center crop (the seeds' protocol: 256)")
  flags.DEFINE_integer("batch_size", 16, "Crops per device call")
  flags.DEFINE_boolean("overwrite", False, "Replace --out if it exists")
  flags.DEFINE_string("fid_weights", "", "pytorch-fid Inception weights (.pth/.npz/.safetensors) for FID")
  flags.DEFINE_string("out", "", "Also write the table to this markdown file")
  flags.mark_flags_as_required(["data"])
  app.run(main, flags_parser=parse_flags)
