r"""Decodes a photo source once into ArrayRecord shards, for training from `shards:DIR`.

  python -m colorjax.prepare --source folder:/photos --out /data/photos_256
  python -m colorjax.prepare --source tfds:coco/2017 --out gs://bucket/coco10k \
      --limit 10000 --eval-fraction 0.2      # the seeds' COCO subset: ~8k train / ~2k eval
  python -m colorjax.prepare --source tfds:places365_small --out /data/places --eval-fraction 0.1
  python -m colorjax.prepare --source folder:/a,folder:/b --out /data/ab   # several as one

Each photo is decoded once; gray and unreadable ones are left out (the manifest names them and
says why); the rest are resized to a short side of --size and stored as JPEG records
(`colorjax.data.shards` says why JPEG). Folders are split by the hash of each file's relative
path, exactly as training on `folder:PATH` splits them; TFDS datasets use their `train` split,
a seeded --limit subset of it, split by the hash of each example's key.

Photos are decoded by one process per core. Shards are written one at a time through a
temporary name, and each finished one is noted in DIR/.prepare/, so a prepare that was killed
resumes at its first unfinished shard when run again with the same arguments. The manifest is
written last: until it exists no reader accepts DIR.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import hashlib
import json
import logging
import multiprocessing
import os
import signal
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import tqdm
from absl import flags
from array_record.python.array_record_module import ArrayRecordWriter
from etils import epath

from colorjax import cli
from colorjax.data import pipeline, shards, sources, tfds_source
from colorjax.data.images import (READ_ERRORS, BadImageError, GrayscaleError, Unreadable, is_grayscale, resize_short_side,
                                  within_aspect)

PROGRESS = ".prepare"  # per-shard completion notes of an unfinished prepare


def open_source(source: str) -> tuple[Sequence[Any], list[str], list[str]]:
  """SOURCE[,SOURCE...] -> (records `pipeline.load_rgb` reads, the key each is split by, its name).

  Several sources are prepared as one, each split exactly as training on the same list splits it
  (by its key, the path relative to its folder). Their names are prefixed with their source, so
  two folders holding the same relative path stay apart in the records and the manifest.
  """
  parts = sources.parts(source)
  if not parts:
    raise ValueError(f"no source in {source!r}")
  opened = [_open_one(part) for part in parts]
  if len(opened) == 1:
    return opened[0] + (opened[0][1],)
  keys = [k for _, part_keys in opened for k in part_keys]
  names = [f"{part}/{k}" for part, (_, part_keys) in zip(parts, opened) for k in part_keys]
  return sources.Concat([records for records, _ in opened]), keys, names


def _open_one(source: str) -> tuple[Sequence[Any], list[str]]:
  kind, _, arg = source.partition(":")
  if kind == "folder" and arg:
    root = os.path.expanduser(arg)
    files = sources.list_folder(root, "all")
    return files, [os.path.relpath(f, root) for f in files]
  if kind == "tfds" and arg:
    records = tfds_source.data_source(arg)
    return records, tfds_source.example_keys(len(records))
  raise sources.bad_source(source, "'folder:PATH' or 'tfds:NAME'")


_records: Sequence[Any] = ()  # the source's records, given once to each worker process


def _set_records(records: Sequence[Any]) -> None:
  global _records
  _records = records


def _prepare_one(task: tuple[int, str], size: int, quality: int) -> tuple[str, bytes | None, str | None]:
  """(index, name) -> (name, shard record, None) or (name, None, why it is left out)."""
  index, name = task
  try:
    record = _records[index]
  except READ_ERRORS as e:  # a damaged TFDS file (riegeli's error names none)
    return name, None, f"cannot be read ({Unreadable.of(name, e).why})"
  try:
    rgb = pipeline.load_rgb(record, draft_size=size)
  except GrayscaleError:  # a gray TFDS example
    return name, None, "grayscale"
  except BadImageError as e:
    return name, None, str(e)
  if is_grayscale(rgb):
    return name, None, "grayscale"
  try:
    return name, shards.encode_record(name, resize_short_side(within_aspect(rgb), size), quality), None
  except (OSError, ValueError) as e:  # one photo PIL cannot encode must not end the whole prepare
    return name, None, f"cannot be encoded ({e})"


def _write_shard(path: epath.Path, results: Iterable[tuple[str, bytes | None, str | None]],
                 bar: tqdm.tqdm) -> dict[str, Any]:
  """Writes the records among `results` to `path` whole; returns its count and what was skipped."""
  count, skipped = 0, {}
  with shards.local_path_for(path) as tmp:
    writer = ArrayRecordWriter(tmp, "group_size:1")  # 1: fast random access (grain's advice)
    for key, record, reason in results:
      bar.update()
      if record is None:
        skipped[key] = reason
      else:
        _written(writer.write, record, path=path)
        count += 1
    _written(writer.close, path=path)
    size = os.path.getsize(tmp)
  return {"file": path.name, "records": count, "bytes": size, "skipped": skipped}


def _written(write: Callable[..., Any], *args: Any, path: epath.Path) -> None:
  """array_record's I/O errors (a full disk) are RuntimeErrors without an errno or a file name."""
  try:
    write(*args)
  except RuntimeError as e:
    raise OSError(f"cannot write {os.fspath(path)}: {e}") from e


@contextlib.contextmanager
def _decoding(records: Sequence[Any], size: int, quality: int, workers: int) -> Iterator[Callable]:
  """A function (index, key) tasks -> their results in order, over `workers` processes."""
  work = functools.partial(_prepare_one, size=size, quality=quality)
  if workers == 1:
    _set_records(records)
    yield lambda tasks: map(work, tasks)
    return
  # The workers start ignoring Ctrl-C (a spawned process keeps that): it stops this process, whose
  # pool then ends them, rather than printing a KeyboardInterrupt traceback from each.
  before = signal.signal(signal.SIGINT, signal.SIG_IGN)
  try:
    pool = multiprocessing.get_context("spawn").Pool(workers, _set_records, (records,))
  finally:
    signal.signal(signal.SIGINT, before)
  with pool:
    yield lambda tasks: pool.imap(work, tasks, chunksize=max(1, min(16, len(tasks) // (4 * workers))))


_FLAG_OF = {"image_size": "size"}  # config keys whose --flag is named otherwise
_PICKING = ("source", "limit", "seed", "eval_fraction")  # each changes the inputs_md5 too


def _differences(there: dict[str, Any], here: dict[str, Any], inputs: tuple[int, int] | None) -> str:
  """What makes two prepares' arguments differ, e.g. `--eval-fraction 0.1 there, 0.2 here`.

  `inputs` (photos there, here) counts the input files when they alone differ.
  """
  said = []
  for key, value in here.items():
    if there.get(key) == value:
      continue
    if key == "inputs_md5":  # said already if an argument that picks the inputs differs
      if not any(there.get(k) != here[k] for k in _PICKING):
        said.append("the input files differ" + (f" ({inputs[0]} there, {inputs[1]} here)" if inputs else ""))
    elif key == "tfds_datasets":  # not recorded before 2026-11-30: nothing to compare
      if key in there:
        said.append(f"the TFDS dataset was rebuilt or upgraded ({', '.join(there[key])} there, "
                    f"{', '.join(value)} here)")
    else:
      old = "unset" if there.get(key) is None else there[key]
      said.append(f"--{_FLAG_OF.get(key, key).replace('_', '-')} {old} there, {value} here")
  return "; ".join(said)


def _same(recorded: dict[str, Any], config: dict[str, Any]) -> bool:
  """Whether a recorded prepare is `config`'s; one from before `tfds_datasets` was recorded
  is taken at its word on which TFDS build it read."""
  return all(recorded.get(k) == v for k, v in config.items() if k != "tfds_datasets" or k in recorded)


def _finished(out: epath.Path, config: dict[str, Any], inputs: int) -> dict[str, Any] | None:
  """The manifest if `out` holds this prepare finished; None if it holds it unfinished or nothing.

  A ValueError naming the arguments that differ if it holds another prepare; `inputs` is how
  many photos this one would prepare.
  """
  if (out / shards.MANIFEST).exists():
    manifest = shards.read_manifest(out)
    if not _same(manifest, config):
      there = sum(manifest.get("counts", {}).values()) + sum(map(len, manifest.get("skipped", {}).values()))
      raise ValueError(f"{os.fspath(out)} already holds other shards, by its {shards.MANIFEST}: "
                       f"{_differences(manifest, config, (there, inputs))}; give --out another directory")
    return manifest
  started = out / PROGRESS / "config.json"
  if started.exists() and not _same(unfinished := json.loads(started.read_text()), config):
    raise ValueError(f"{os.fspath(out)} holds an unfinished prepare with other arguments or inputs "
                     f"({_differences(unfinished, config, None)}): run that again, or delete the directory")
  return None


def prepare(source: str, out: str, size: int = 256, limit: int = 0, seed: int = 0,
            eval_fraction: float = 0.1, workers: int = 0, shard_size: int = 1024,
            quality: int = shards.JPEG_QUALITY, progress: bool = True) -> dict[str, Any]:
  """Writes the shards and manifest of `source` into `out`; returns the manifest.

  `workers` processes decode photos (0: one per core, 1: this process alone). A lower JPEG
  `quality` trades colour fidelity for size (q80 is ~half of q95's bytes, for shipping a
  dataset to a machine with a small upload limit).
  """
  for name, value, ok in (("size", size, size > 0), ("shard_size", shard_size, shard_size > 0),
                          ("limit", limit, limit >= 0), ("quality", quality, 1 <= quality <= 100),
                          ("eval_fraction", eval_fraction, 0 <= eval_fraction < 1), ("workers", workers, workers >= 0)):
    if not ok:
      raise ValueError(f"--{name.replace('_', '-')} {value} is out of range (size, shard-size > 0; limit, workers >= 0; "
                       "quality 1-100; eval-fraction in [0, 1))")
  with sources.given_in("--source"):
    records, keys, names = open_source(source)
  plan = {s: sources.split_indices(keys, s, eval_fraction, limit, seed) for s in shards.SPLITS}
  picked = "\n".join(keys[i] for s in shards.SPLITS for i in plan[s])
  # What makes two prepares the same: compared on resume and against a finished DIR.
  config = {"source": source, "image_size": size, "limit": limit, "seed": seed,
            "eval_fraction": eval_fraction, "shard_size": shard_size, "quality": quality,
            "inputs_md5": hashlib.md5(picked.encode("utf-8", "surrogateescape")).hexdigest()}
  # A TFDS source's keys are its example numbers: a rebuilt dataset of the same size has the same.
  parts = records.parts if isinstance(records, sources.Concat) else [records]
  if versions := [p.dataset_info.full_name for p in parts if hasattr(p, "dataset_info")]:
    config["tfds_datasets"] = versions
  out, notes = epath.Path(out), epath.Path(out) / PROGRESS
  if out.exists() and any(out.iterdir()) and not ((out / shards.MANIFEST).exists() or notes.exists()):
    raise ValueError(f"{os.fspath(out)} is not empty and holds no prepare: give --out a new or empty directory")
  if manifest := _finished(out, config, sum(map(len, plan.values()))):
    logging.info("%s is already prepared", os.fspath(out))
    return manifest
  created = not out.exists()
  notes.mkdir(parents=True, exist_ok=True)
  shards.write_json(notes / "config.json", config)

  written = {s: [] for s in shards.SPLITS}
  with (_decoding(records, size, quality, workers or os.cpu_count() or 1) as decode,
        tqdm.tqdm(total=sum(map(len, plan.values())), unit="photo", disable=not progress) as bar):
    for split in shards.SPLITS:
      (out / split).mkdir(parents=True, exist_ok=True)
      chunks = [plan[split][i:i + shard_size] for i in range(0, len(plan[split]), shard_size)]
      for k, chunk in enumerate(chunks):
        note = notes / f"{split}-{k:05d}.json"
        if note.exists():
          bar.update(len(chunk))
        else:
          path = out / split / f"{k:05d}-of-{len(chunks):05d}.array_record"
          shards.write_json(note, _write_shard(path, decode([(int(i), names[i]) for i in chunk]), bar))
        written[split].append(json.loads(note.read_text()))

  manifest = {
      "format": shards.FORMAT, "version": shards.VERSION, **config,
      "record": f"msgpack {{key, jpeg}}: short side {size} px, aspect kept, JPEG q{quality} 4:2:0; the "
                "key is the photo's relative path or train/INDEX, after SOURCE/ when several are prepared",
      "split": "md5 of the key (relative path, or train/INDEX of TFDS) < eval_fraction",
      "counts": {s: sum(w["records"] for w in written[s]) for s in shards.SPLITS},
      # "bytes" lets readers notice a shard changed or cut short since (older prepares lack it)
      "shards": {s: [{k: w[k] for k in ("file", "records", "bytes") if k in w} for w in written[s]]
                 for s in shards.SPLITS},
      "skipped": {s: {k: v for w in written[s] for k, v in w["skipped"].items()} for s in shards.SPLITS},
      "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
  }
  if not sum(manifest["counts"].values()):
    # Empty shards and notes would make `out` refuse every other prepare until deleted by hand.
    for made in (notes, *(out / s for s in shards.SPLITS)):
      if made.exists():
        made.rmtree()
    if created:
      out.rmdir()
    skipped = [f"{k}: {v}" for split in manifest["skipped"].values() for k, v in split.items()]
    raise ValueError(f"--source {source}: no colour photo to prepare ({len(skipped)} skipped"
                     + (f", e.g. {'; '.join(skipped[:3])})" if skipped else ")"))
  shards.write_json(out / shards.MANIFEST, manifest)
  notes.rmtree()
  return manifest


def main(argv: list[str]) -> None:
  del argv
  f = flags.FLAGS
  try:
    manifest = prepare(f.source, f.out, f.size, f.limit, f.seed, f.eval_fraction, f.workers,
                       f.shard_size, f.quality)
  except (ValueError, OSError) as e:  # bad options, sources or --out: the message says which
    cli.exit_with_error(e)
  counts = " + ".join(f"{n} {split}" for split, n in manifest["counts"].items())
  skipped = sum(len(v) for v in manifest["skipped"].values())
  print(f"{os.fspath(f.out)}: {counts} photos ({skipped} skipped, named in its manifest): "
        f"train with --config.data.train=shards:{f.out}")
  if f.eval_fraction and not manifest["counts"]["eval"]:  # training would stop at its start with less advice
    logging.warning("no photo fell in the eval split (--eval-fraction %g of %d): a run on these shards needs "
                    "config.data.eval set to other photos; or prepare again into another --out with more "
                    "photos or a larger --eval-fraction", f.eval_fraction, sum(manifest["counts"].values()))


if __name__ == "__main__":
  flags.DEFINE_string("source", None, "folder:PATH, tfds:coco/2017, tfds:places365_small, ... (comma-separated: several as one)")
  flags.DEFINE_string("out", None, "Output directory, local or gs://")
  flags.DEFINE_integer("size", 256, "Short side of the stored photos, in pixels")
  flags.DEFINE_integer("limit", 0, "Prepare a seeded random subset of this many photos (0: all)")
  flags.DEFINE_integer("seed", 0, "Seed of the --limit subset")
  flags.DEFINE_float("eval_fraction", 0.1, "Share held out for eval, by a hash of each photo's key")
  flags.DEFINE_integer("quality", shards.JPEG_QUALITY, "JPEG quality of the stored photos (colorjax.data.shards says why 95)")
  flags.DEFINE_integer("workers", 0, "Decoding processes (0: one per core)")
  flags.DEFINE_integer("shard_size", 1024, "Photos per shard (also the unit of resumption)")
  flags.mark_flags_as_required(["source", "out"])
  logging.getLogger().setLevel(logging.INFO)
  from colorjax.colorize import parse_flags  # here, not at the top: spawned workers need not import it
  cli.run(main, flags_parser=parse_flags)
