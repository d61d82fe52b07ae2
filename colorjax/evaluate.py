"""Scores a trained colorizer on held-out photos, always next to the no-colour baseline.

    python -m colorjax.evaluate --workdir runs/demo --data folder:/photos/val --out report.json

The protocol: each photo's short side resized to 256 (bicubic; the seeds squashed whole photos
to 256 x 256 instead, docs/design.md), the centre 256 x 256
crop colorized as `colorize` would (the model sees the crop's L at the render size, default the
training image_size, and its ab is upsampled onto the crop's L), compared with the crop in RGB uint8:
PSNR, SSIM (Wang et al.: 11x11 Gaussian window, sigma 1.5 = scikit-image's
`gaussian_weights=True, sigma=1.5, use_sample_covariance=False`) and MSE. Predicting no colour
at all (a = b = 0) already scores about 23 dB and SSIM 0.94 on real photos, so that baseline
is always a row of the table, and Hasler & Süsstrunk colourfulness (ground truth in its own
row) tells a colourful model from a safely sepia one. Classifiers (seed 003) also get the share
of pixels whose delivered colour is in the right ab class; `--fid-weights` adds FID (`colorjax.fid`).

All photos of `--data` are scored (`--split eval`: only the hash-held-out share of a training
source, split as the run split it: `held_out_fraction`). Grayscale photos have no colour to score:
they are skipped and counted, as are unreadable files. `--out report.json` also writes
`report.csv`, one row per photo.

`--predictions DIR` scores another system's pictures of the same photos instead (e.g. a
PyTorch baseline's, `benchmarks/quick_cpu_vs_torch.sh`), with the same crops and metrics.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import logging
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import app, flags
from PIL import Image, ImageOps
from tqdm import tqdm

from colorjax import cli, color, fid, metrics
from colorjax import config as config_lib
from colorjax.colorize import (CHECKPOINT_HELP, COLOUR_AT_RENDER_SIZE_HELP, PRIOR_CORRECTION_HELP, Colorizer,
                               parse_flags, prior_correction_flag, read_run)
from colorjax.data import pipeline, shards, sources
from colorjax.data.images import BadImageError, GrayscaleError, Unreadable

# Per-photo scores of a system; a system's columns are its prefix + these names.
SCORES = ("psnr", "ssim", "mse", "colorfulness", "pixel_accuracy")
SYSTEMS = {"model": "", "no_colour": "gray_", "ground_truth": "real_"}
CSV_FIELDS = tuple(prefix + s for prefix in SYSTEMS.values() for s in SCORES)  # after "file"
LABELS = {"no_colour": "no colour (a = b = 0)", "ground_truth": "ground truth"}
# (key, header, format) of the table; a column shows when any row has its key.
COLUMNS = (("psnr", "PSNR (dB)", "{:.2f}"), ("ssim", "SSIM", "{:.4f}"), ("mse", "MSE", "{:.1f}"),
           ("colorfulness", "colourfulness", "{:.1f}"), ("pixel_accuracy", "pixel accuracy", "{:.3f}"),
           ("fid", "FID", "{:.2f}"))
FID_MISSING = ("FID not computed: pass --fid-weights PATH, pytorch-fid's Inception weights "
               "(pt_inception-2015-12-05-6726825d.pth, or that state dict as .npz/.safetensors; "
               "see the docstring of colorjax.fid)")


@dataclasses.dataclass
class Evaluation:
  """Per-photo scores and what was left out; `summary()` gives the table's rows."""
  rows: list[dict[str, Any]]                          # {"file": ..., score: value}
  grayscale: list[str] = dataclasses.field(default_factory=list)
  unreadable: dict[str, str] = dataclasses.field(default_factory=dict)
  fid: dict[str, float] | None = None                 # system -> FID against the real photos
  fid_missing: str = FID_MISSING                      # why `fid` is None

  def summary(self) -> dict[str, dict[str, float]]:
    """Mean of every score per system (model, no_colour, ground_truth), plus FID when computed."""
    out = {}
    for system, prefix in SYSTEMS.items():
      out[system] = {s: float(np.mean([r[prefix + s] for r in self.rows]))
                     for s in SCORES if prefix + s in self.rows[0]}
      if self.fid and system in self.fid:
        out[system]["fid"] = self.fid[system]
    return out

  def psnr_gain(self, over: "Evaluation | None" = None) -> tuple[float, float]:
    """`metrics.paired_gain` of the model's PSNR over the no-colour baseline's, or over the
    model of `over` (scored on the same photos)."""
    if over is None:
      return metrics.paired_gain([r["psnr"] for r in self.rows], [r["gray_psnr"] for r in self.rows])
    theirs = {r["file"]: r["psnr"] for r in over.rows}
    if set(theirs) != {r["file"] for r in self.rows}:
      raise ValueError("a paired gain needs both evaluations on the same photos")
    return metrics.paired_gain([r["psnr"] for r in self.rows], [theirs[r["file"]] for r in self.rows])

  def counts(self) -> str:
    return (f"{len(self.rows)} photos ({len(self.grayscale)} grayscale skipped, "
            f"{len(self.unreadable)} unreadable skipped)")


class PredictionFolder:
  """Another colorizer's pictures of the same photos, scored exactly as colorjax's own: the
  picture of photo `.../NAME.ext` is `DIR/NAME.*` (searched recursively), at the photo's size."""

  def __init__(self, directory: str):
    if not os.path.isdir(directory):
      raise FileNotFoundError(f"predictions folder {directory!r} does not exist")
    self.directory, self.by_stem = directory, {}
    for path in sources.list_folder(directory, "all"):
      stem = os.path.splitext(os.path.basename(path))[0]
      if stem in self.by_stem:
        raise ValueError(f"{directory}: two predictions named {stem}: {self.by_stem[stem]} and {path}")
      self.by_stem[stem] = path
    self.photo_by_stem: dict[str, str] = {}

  def crop(self, name: str, photo: pipeline.Record, image_size: int) -> np.ndarray:
    """The prediction for photo `name`, cropped as the photo; BadImageError if missing or misfit.

    A ValueError if two photos share a file name: the pictures are matched by name alone.
    """
    stem = os.path.splitext(os.path.basename(name))[0]
    if self.photo_by_stem.setdefault(stem, name) != name:
      raise ValueError(f"photos {self.photo_by_stem[stem]} and {name} share the name {stem!r}: --predictions "
                       "matches pictures by file name, so score them in separate runs")
    path = self.by_stem.get(stem)
    if path is None:
      raise BadImageError(f"no prediction for it in {self.directory}")
    if isinstance(photo, str):
      try:
        with Image.open(photo) as a, Image.open(path) as b:
          size, got = ImageOps.exif_transpose(a).size, ImageOps.exif_transpose(b).size  # each as it is cropped
      except (OSError, Image.DecompressionBombError) as e:
        raise BadImageError(f"prediction {path} is not a readable image ({e})") from e
      if size != got:
        raise BadImageError(f"prediction {path} is {got[0]}x{got[1]}, the photo {size[0]}x{size[1]}")
    return pipeline.load_eval_crop(path, image_size, draft=False)


def record_name(record: pipeline.Record, index: int) -> str:
  """A photo's name in the report: its path, its shard key or its TFDS key (else its position)."""
  if isinstance(record, str):
    return record
  if isinstance(record, dict) and "colorjax_key" in record:
    return record["colorjax_key"]
  if isinstance(record, Unreadable):
    return record.name
  if isinstance(record, bytes):
    with contextlib.suppress(BadImageError):
      return shards.unpack_record(record)[0]
  return f"#{index}"


def crop_batches(files: Iterable[pipeline.Record], image_size: int, batch_size: int,
                 left_out: Evaluation, predictions: PredictionFolder | None = None
                 ) -> Iterator[tuple[list[str], np.ndarray]]:
  """(names, uint8 centre crops [<= batch_size, S, S, 3]); photos that turn out gray or fail
  to load are named in `left_out.grayscale` / `left_out.unreadable`.

  With `predictions`, each crop is a pair [2, S, S, 3]: the photo's and its prediction's.
  """
  names, crops = [], []
  for i, record in enumerate(files):
    try:
      crop = pipeline.load_eval_crop(record, image_size, draft=predictions is None)  # as the prediction's
      if predictions:
        crop = np.stack([crop, predictions.crop(record_name(record, i), record, image_size)])
      crops.append(crop)
    except GrayscaleError:
      left_out.grayscale.append(record_name(record, i))
      continue
    except BadImageError as e:
      left_out.unreadable[record_name(record, i)] = str(e)
      continue
    names.append(record_name(record, i))
    if len(crops) == batch_size:
      yield names, np.stack(crops)
      names, crops = [], []
  if crops:
    yield names, np.stack(crops)


def evaluate(colorizer: Colorizer | PredictionFolder, data: sources.ScanReport, image_size: int = 256,
             batch_size: int = 16, features: fid.FeatureFn | None = None, label: str = "") -> Evaluation:
  """Scores `colorizer` on the centre crops of the colour photos `data` (`sources.resolve`).

  Each crop is colorized exactly as `colorize` would (the model sees its L at the colorizer's
  render size; the ab is upsampled onto the crop's own L), so the scores are those of the
  pictures a user gets. A `PredictionFolder` scores another system's pictures the same way.
  `features` (uint8 RGB -> vectors, e.g. `fid.InceptionFeatures`) adds FID of the model and
  of the no-colour baseline against the real crops. A progress bar (named `label`) shows on a
  terminal: COCO's 5000 validation photos take minutes on a CPU.
  """
  folder = colorizer if isinstance(colorizer, PredictionFolder) else None
  classifier = bool(getattr(getattr(colorizer, "generator", None), "num_classes", 0))
  score = jax.jit(lambda pred, rgb: {**metrics.score_predictions(pred, rgb),
                                     **({"pixel_accuracy": metrics.pixel_accuracy(pred, rgb)} if classifier else {})})
  result = Evaluation(rows=[], grayscale=list(data.grayscale), unreadable=dict(data.unreadable))
  stats = {k: fid.FeatureStats() for k in ("model", "no_colour", "real")} if features else None
  # The bar counts the photos as they are read, those then left out too.
  with tqdm(data.files, desc=label or None, unit="photo", file=sys.stderr, disable=None) as files:
    for names, crops in crop_batches(files, image_size, batch_size, result, folder):
      n = len(crops)
      pad = lambda x: np.concatenate([x, np.zeros((batch_size - n,) + x.shape[1:], np.uint8)])
      if folder:
        crops, pred_u8 = crops[:, 0], crops[:, 1]
      else:
        pred_u8 = np.stack(colorizer.colorize_batch(list(crops)))
      scores = jax.device_get(score(pad(pred_u8), pad(crops)))  # one compiled shape for every batch
      result.rows += [{"file": name, **{k: float(scores[k][i]) for k in CSV_FIELDS if k in scores}}
                      for i, name in enumerate(names)]
      if stats:
        l, ab = color.rgb_uint8_to_model(crops, np)
        gray_u8 = color.to_uint8(color.model_to_rgb(l, np.zeros_like(ab), np), np)
        for key, images in (("model", pred_u8), ("no_colour", gray_u8), ("real", crops)):
          stats[key].update(features(images))
  if not result.rows:
    raise ValueError(f"no photo could be scored: {result.counts()}")
  if stats and len(result.rows) < 2:  # the scores of one photo are worth keeping without it
    result.fid_missing = f"FID not computed: it needs at least 2 photos, {len(result.rows)} was scored"
    logging.warning("%s", result.fid_missing)
  elif stats:
    result.fid = {k: fid.fid(stats["real"], stats[k]) for k in ("model", "no_colour")}
  return result


# The advice when a run's held-out share leaves no photo of --data in its eval split.
UNSEEN_HINT = "score photos the run never saw with --split all"


def resolve_scored(data: str, split: str, eval_fraction: float, held_out_by: str = "the run",
                   hint: str = UNSEEN_HINT) -> sources.ScanReport:
  """The photos of `data` (`--data`) to score: `sources.resolve`, but a `--split eval` that would
  take the eval split of shards prepared with a larger fraction than `held_out_by` held out is
  refused, since those shards' eval photos include some it trained on. `held_out_by=""`: no
  such check (pictures of another system, whose split is not known). `hint`: the advice when
  `eval_fraction` leaves the eval split of `data` without a photo."""
  if split == "eval" and held_out_by:
    for part in sources.parts(data):
      if part.startswith("shards:"):
        with sources.given_in("--data"):
          prepared = shards.read_manifest(part[len("shards:"):])["eval_fraction"]
        if prepared > eval_fraction:
          raise ValueError(f"--split eval: {part} was prepared with eval_fraction {prepared:g}, but {held_out_by} "
                           f"held out {eval_fraction:g} of its data, so that eval split holds photos it trained "
                           f"on: score the source it trained on, or shards prepared with --eval-fraction "
                           f"{eval_fraction:g}")
  return sources.resolve(data, split, eval_fraction, setting="--data", hint=hint)


def warn_if_trained_on(config: ml_collections.ConfigDict, workdir: str, data: str, split: str = "all") -> None:
  """Says so where `--split all` scores photos the run trained on: those are no held-out scores.
  It points to `--split eval` only where that holds out what training did: on the source as the
  run named it (a folder inside it, or around it, is split by other relative paths), of a run that
  held out a share of it (not one with `data.eval` set). `--split eval` of such a folder inside
  or around is said to hold training photos too."""
  trained = [(part, train) for part in sources.parts(data) for train in sources.parts(config.data.train)
             if sources.overlap(part, train)]
  if split == "eval":
    for part, train in trained:
      if sources.source_key(part) != sources.source_key(train):
        logging.warning("--split eval: --data %s shares photos with %s's data.train %s but is split by other "
                        "relative paths, so its eval split holds photos the run trained on: score --data %s "
                        "--split eval, or photos it never saw", part, workdir, train, train)
    return
  if not trained:
    return
  try:
    held_out_fraction(config, workdir)
    split_eval = True
  except ValueError:  # none held out (data.eval set), or no one fraction: --split eval refuses the run
    split_eval = False
  for part, train in trained:
    advice = ("--split eval scores only the photos it held out" if split_eval and sources.source_key(part) == sources.source_key(train) else
              f"--split eval holds out what training did only on --data {train}" if split_eval else
              "--split eval cannot leave them out (it says why): score photos it never saw")
    logging.warning("--split all: --data %s holds photos %s trained on (data.train %s), so its scores are not "
                    "held-out ones; %s", part, workdir, train, advice)


def held_out_fraction(config: ml_collections.ConfigDict, workdir: str) -> tuple[float, str]:
  """(the share of its `data.train` a run held out, where that number comes from, e.g.
  "shards:DIR's manifest.json").

  `--split eval` leaves out every photo the run trained on only if it splits --data as training
  split it: folder and TFDS sources by `data.eval_fraction`, but prepared shards by the fraction
  `prepare` split them with (their manifest), whatever the config says; with `data.eval` set,
  all of a folder or TFDS source trained. A ValueError if the run's sources were split with
  different fractions: no one fraction holds out only photos none of them trained on.
  """
  splits = []  # (fraction, where it comes from) of each source
  for part in sources.parts(config.data.train):
    if part.startswith("shards:"):
      try:
        fraction = shards.read_manifest(part[len("shards:"):])["eval_fraction"]
      except (FileNotFoundError, ValueError) as e:
        raise ValueError(f"--split eval: {workdir} trained on {part}, split by the eval_fraction in its "
                         f"{shards.MANIFEST}, which cannot be read ({e})") from e
      origin = f"{part}'s {shards.MANIFEST}"
    else:
      fraction = config_lib.held_out_share(config)
      origin = f"all of {part} trained, data.eval being set" if not fraction else "the run's data.eval_fraction"
    splits.append((float(fraction), origin))
  fractions = {f for f, _ in splits}
  if len(fractions) > 1:
    split_by = "; ".join(f"{f:g} ({o})" for f, o in dict.fromkeys(splits))
    raise ValueError(f"--split eval: {workdir} trained on sources split with different eval fractions "
                     f"({split_by}), so no one fraction of --data is held out from all of them: "
                     "score photos it never saw with --split all")
  fraction, = fractions
  if not fraction:
    raise ValueError(f"--split eval: {workdir} held out none of data.train ({config.data.train})"
                     + (f", it was evaluated on data.eval={config.data.eval}" if config.data.get("eval") else "")
                     + ": score photos it never saw with --split all")
  return fraction, " and ".join(dict.fromkeys(o for _, o in splits))


def format_table(rows: Sequence[dict[str, Any]], leading: Sequence[tuple[str, str]],
                 columns: Sequence[tuple[str, str, str]] = COLUMNS) -> str:
  """A markdown table: `leading` (key, header) text columns, then the score `columns` any row has."""
  columns = [c for c in columns if any(c[0] in r for r in rows)]
  header = [h for _, h in leading] + [h for _, h, _ in columns]
  lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
  for r in rows:
    cells = [str(r.get(k, "")) for k, _ in leading]
    cells += [fmt.format(r[k]) if k in r else "–" for k, _, fmt in columns]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def system_rows(summary: dict[str, dict[str, float]], model_label: str) -> list[dict[str, Any]]:
  """Table rows from `Evaluation.summary()`: the model, then the baseline and the ground truth."""
  labels = {"model": model_label, **LABELS}
  return [{"system": labels[s], **summary[s]} for s in SYSTEMS]


def report_csv_path(path: str) -> str:
  """The per-photo CSV written beside report `path` (NAME.json -> NAME.csv); a ValueError for a
  path that is not a .json file name, checked before any scoring."""
  if not path.endswith(".json") or os.path.isdir(path):
    raise ValueError(f"--out {path}: give a NAME.json file (the per-photo CSV goes beside it as NAME.csv)")
  return path[:-len(".json")] + ".csv"


def refuse_existing(*paths: str) -> None:
  """A ValueError, before any scoring, if an output file is already there (`--overwrite` replaces)."""
  for path in paths:
    if os.path.lexists(path):
      raise ValueError(f"{path} already exists; pass --overwrite to replace it")


def write_report(path: str, evaluation: Evaluation, meta: dict[str, Any]) -> str:
  """`path` (JSON: `meta`, counts, the table's numbers) and the per-photo CSV beside it; returns the CSV path."""
  csv_path = report_csv_path(path)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  report = {**meta, "photos": len(evaluation.rows), "grayscale_skipped": evaluation.grayscale,
            "unreadable_skipped": evaluation.unreadable, "summary": evaluation.summary(),
            "psnr_over_no_colour": dict(zip(("mean", "ci95_half_width"),  # JSON has no NaN: one photo, no interval
                                            [v if np.isfinite(v) else None for v in evaluation.psnr_gain()]))}
  if evaluation.fid is None:
    report["fid"] = evaluation.fid_missing
  shards.write_json(path, report)
  with shards.local_path_for(csv_path) as tmp, open(tmp, "w", newline="") as f:
    writer = csv.DictWriter(f, list(evaluation.rows[0]))
    writer.writeheader()
    writer.writerows(evaluation.rows)
  return csv_path


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  if bool(FLAGS.workdir) == bool(FLAGS.predictions):
    raise app.UsageError("give --workdir (a trained run) or --predictions (another system's pictures)")
  cli.cache_compilations()
  try:
    if FLAGS.out:
      csv_path = report_csv_path(FLAGS.out)
      if not FLAGS.overwrite:
        refuse_existing(FLAGS.out, csv_path)
      cli.check_writable(os.path.dirname(os.path.abspath(FLAGS.out)), "--out")
    if FLAGS.batch_size < 1:
      raise ValueError("--batch_size must be positive")
    eval_fraction, origin = FLAGS.eval_fraction, "--eval_fraction"  # the fraction --predictions are held out with
    checkpoint = FLAGS.checkpoint
    if FLAGS.predictions:
      system = PredictionFolder(FLAGS.predictions)
    else:  # all but the model first: a wrong --data or --split is found before the model loads
      config, checkpoint, _ = read_run(FLAGS.workdir, checkpoint)  # resolved: any warning is said once
      if FLAGS.split == "eval":
        eval_fraction, origin = held_out_fraction(config, FLAGS.workdir)
      warn_if_trained_on(config, FLAGS.workdir, FLAGS.data, FLAGS.split)
    split = f"eval: eval_fraction {eval_fraction:g}, from {origin}" if FLAGS.split == "eval" else FLAGS.split
    # Another system's pictures: its split is --eval_fraction's if given, else shards keep their own.
    held_out_by = "the run" if FLAGS.workdir else "--eval_fraction" if FLAGS["eval_fraction"].present else ""
    data = resolve_scored(FLAGS.data, FLAGS.split, eval_fraction, held_out_by,
                          "raise --eval_fraction" if FLAGS.predictions else UNSEEN_HINT)
    features = fid.InceptionFeatures.from_file(FLAGS.fid_weights) if FLAGS.fid_weights else None
    if FLAGS.predictions:
      label, how = "predictions", f"pictures in {FLAGS.predictions}"
      meta = {"predictions": FLAGS.predictions}
    else:
      system = Colorizer.from_workdir(FLAGS.workdir, checkpoint, FLAGS.render_size or None,
                                      temperature=FLAGS.temperature or None,
                                      prior_correction=prior_correction_flag(),
                                      colour_at_render_size=FLAGS.colour_at_render_size)
      step = system.step
      anchored = f" (coarse colour at {system.config.image_size})" if system.anchored else ""
      label, how = f"model (step {step})", f"colorized at render size {system.render_size}{anchored}"
      meta = {"workdir": FLAGS.workdir, "checkpoint": system.checkpoint, "step": step,
              "render_size": system.render_size, "colour_anchored": system.anchored, "model": system.config.model.to_dict()}
    evaluation = evaluate(system, data, FLAGS.image_size, FLAGS.batch_size, features)
  except (FileNotFoundError, ValueError, ImportError) as e:
    cli.exit_with_error(e)
  except jax.errors.JaxRuntimeError as e:
    cli.exit_if_out_of_memory(e, f"--batch-size (now {FLAGS.batch_size})" + (
        "" if FLAGS.predictions else f" or --render-size (now {FLAGS.render_size or 'the training size'})"))
    raise
  print(f"{FLAGS.workdir or FLAGS.predictions} on {FLAGS.data} [{split}]: {evaluation.counts()}; "
        f"{FLAGS.image_size} px centre crops {how}, RGB uint8\n")
  print(format_table(system_rows(evaluation.summary(), label), [("system", "")]))
  print(f"\nPSNR over no colour: {metrics.format_gain(evaluation.psnr_gain())} dB "
        f"(95 % confidence interval, paired over the {len(evaluation.rows)} photos)")
  for name, why in list(evaluation.unreadable.items())[:5]:
    print(f"skipped {why if str(why).startswith(str(name)) else f'{name}: {why}'}")  # errors name their file
  if features is None:
    print("\n" + FID_MISSING)
  if FLAGS.out:
    meta.update(data=FLAGS.data, split=FLAGS.split, image_size=FLAGS.image_size)
    if FLAGS.split == "eval":
      meta.update(eval_fraction=eval_fraction)
    try:
      print(f"\nwrote {FLAGS.out} and {write_report(FLAGS.out, evaluation, meta)}")
    except OSError as e:
      cli.exit_with_error(e, f"cannot write the report {FLAGS.out} ({e.strerror or e})")


FLAGS = flags.FLAGS

if __name__ == "__main__":
  flags.DEFINE_string("workdir", "", "Training workdir with config.json and checkpoints/")
  flags.DEFINE_string("predictions", "", "Instead of --workdir: a folder of another system's "
                      "pictures of the --data photos, one per photo with the same name and size")
  flags.DEFINE_float("eval_fraction", 0.1, "With --predictions and --split eval: the held-out share",
                     lower_bound=0, upper_bound=1)
  flags.DEFINE_string("data", None, "Held-out photos: folder:PATH, shards:DIR or tfds:NAME (comma-joined)")
  flags.DEFINE_enum("split", "all", ["all", "eval"], "all photos of --data, or only the share "
                    "the workdir's run held out from training (its shards' eval_fraction, or data.eval_fraction)")
  flags.DEFINE_string("checkpoint", "", CHECKPOINT_HELP)
  flags.DEFINE_integer("image_size", 256, "Short side resize and centre crop (the seeds' size: 256)",
                       lower_bound=metrics.SSIM_WINDOW)
  flags.DEFINE_integer("render_size", 0, "Short side the model sees, as colorize's --render-size "
                       "(default: the training image_size)")
  flags.DEFINE_boolean("colour_at_render_size", False, COLOUR_AT_RENDER_SIZE_HELP)
  flags.DEFINE_integer("batch_size", 16, "Crops per device call")
  flags.DEFINE_float("temperature", 0, "ab-class models: annealed-mean temperature (0: the trained config's)")
  flags.DEFINE_float("prior_correction", -1, PRIOR_CORRECTION_HELP)
  flags.DEFINE_string("fid_weights", "", "pytorch-fid Inception weights (.pth/.npz/.safetensors) for FID")
  flags.DEFINE_string("out", "", "Write this JSON report (NAME.json) and the per-photo NAME.csv beside it")
  flags.DEFINE_boolean("overwrite", False, "Replace --out's files if they exist")
  flags.mark_flags_as_required(["data"])
  cli.run(main, flags_parser=parse_flags)
