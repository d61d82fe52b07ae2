"""Where photos come from: a source string from the config -> the usable records of a split.

Sources, several joined with commas (`folder:a,shards:b`):
  folder:PATH  image files under PATH (recursive), scanned here; records are their paths
  shards:DIR   ArrayRecord shards written by `colorjax.prepare` (DIR/train, DIR/eval)
  tfds:NAME    a TFDS image dataset on disk (`colorjax.data.tfds_source`)
The train/eval split is a hash of each file's path relative to its folder, so it is the same
on every machine, in every process and across runs, and adding photos never moves old ones
between splits. `prepare` splits folders by the same rule, so their shards hold out the same
photos, and TFDS examples by the same hash of their key.
"""

from __future__ import annotations

import bisect
import collections.abc
import concurrent.futures
import contextlib
import dataclasses
import hashlib
import itertools
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from colorjax.data import shards, tfds_source
from colorjax.data.images import IMAGE_EXTENSIONS, BadImageError, is_grayscale, list_tree, open_image

SPLITS = ("train", "eval", "all")


@dataclasses.dataclass
class ScanReport:
  """What a source held: usable colour photos and why the others were left out.

  `files` are the records for `pipeline`: a list of paths for folders, a random-access
  sequence (shard records, TFDS examples) for the others.
  """
  files: collections.abc.Sequence[Any]
  grayscale: list[str] = dataclasses.field(default_factory=list)
  unreadable: dict[str, str] = dataclasses.field(default_factory=dict)
  unchecked: int = 0  # TFDS examples among `files`: not scanned, their gray ones are left out as read

  def summary(self) -> str:
    unchecked = (f" ({self.unchecked} of them TFDS examples, not scanned: the gray ones are left out as "
                 "they are read)" if self.unchecked else "")
    return (f"{len(self.files)} colour photos{unchecked}, {len(self.grayscale)} grayscale left out, "
            f"{len(self.unreadable)} unreadable skipped")


def in_eval_split(relpath: str, eval_fraction: float) -> bool:
  """Deterministic split: md5 of the relative path, as a fraction of 2**32 (of its bytes on disk
  where the name is not UTF-8)."""
  h = int(hashlib.md5(relpath.replace(os.sep, "/").encode("utf-8", "surrogateescape")).hexdigest()[:8], 16)
  return h / 2 ** 32 < eval_fraction


def split_indices(keys: collections.abc.Sequence[str], split: str, eval_fraction: float,
                  limit: int = 0, seed: int = 0) -> np.ndarray:
  """Sorted indices of the `keys` in `split` by `in_eval_split`.

  `limit` > 0 first draws a seeded random subset of that many keys (e.g. COCO's 10k of 118k),
  which is then split by the same rule.
  """
  indices = np.arange(len(keys))
  if 0 < limit < len(keys):
    indices = np.sort(np.random.default_rng(seed).choice(len(keys), limit, replace=False))
  if split == "all":
    return indices
  return indices[[in_eval_split(keys[i], eval_fraction) == (split == "eval") for i in indices]]


def list_folder(root: str | os.PathLike, split: str = "all", eval_fraction: float = 0.1,
                warn: bool = True) -> list[str]:
  """Image files under `root` (recursive, sorted) that belong to `split`; `warn=False` leaves
  the folders it cannot list unsaid (when another split of the same source said them)."""
  if split not in SPLITS:
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
  root = Path(root).expanduser()
  if root.is_file():
    raise FileNotFoundError(f"image folder {str(root)!r} is a file, not a folder")
  if not root.is_dir():
    raise FileNotFoundError(f"image folder {str(root)!r} does not exist")
  files = []
  tree, problems = list_tree(root)
  for problem in problems if warn else ():
    logging.warning("left out: %s", problem)
  for path in tree:
    if path.suffix.lower() not in IMAGE_EXTENSIONS or not path.is_file():
      continue
    if split != "all" and in_eval_split(str(path.relative_to(root)), eval_fraction) != (split == "eval"):
      continue
    files.append(str(path))
  return files


def _check(path: str) -> str | None:
  """None for a colour photo, "grayscale", or the reason it is unreadable."""
  try:
    rgb, _ = open_image(path, draft_size=64)
  except BadImageError as e:
    return str(e)
  return "grayscale" if is_grayscale(rgb) else None


def scan(files: list[str], workers: int = 8) -> ScanReport:
  """Opens every file once (JPEG draft mode, ~1 ms each) to drop gray and unreadable ones."""
  report = ScanReport(files=[])
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    for path, problem in zip(files, pool.map(_check, files)):
      if problem is None:
        report.files.append(path)
      elif problem == "grayscale":
        report.grayscale.append(path)
      else:
        logging.warning("skipping %s", problem)
        report.unreadable[path] = problem
  return report


class Concat(collections.abc.Sequence):
  """Several random-access sources read as one (grain needs only len and [i])."""

  def __init__(self, parts: list[collections.abc.Sequence[Any]]):
    self.parts = parts
    self.starts = list(itertools.accumulate(map(len, parts), initial=0))

  def __len__(self) -> int:
    return self.starts[-1]

  def __getitem__(self, i: int) -> Any:
    if not 0 <= i < len(self):
      raise IndexError(i)
    part = bisect.bisect_right(self.starts, i) - 1
    return self.parts[part][i - self.starts[part]]


def _prepared(directory: str, split: str, eval_fraction: float,
              report: ScanReport) -> collections.abc.Sequence[bytes]:
  """The shard records of `split`; what `prepare` left out is added to `report`."""
  manifest = shards.read_manifest(directory)
  if split != "all" and eval_fraction and manifest["eval_fraction"] != eval_fraction:
    logging.info("shards:%s keeps the split prepare made with eval_fraction %g; an eval_fraction of %g "
                 "does not apply to it", directory, manifest["eval_fraction"], eval_fraction)
  for s in shards.SPLITS if split == "all" else (split,):
    for key, reason in manifest["skipped"][s].items():
      if reason == "grayscale":
        report.grayscale.append(key)
      else:
        report.unreadable[key] = reason
  return shards.open_split(directory, split)


def parts(spec: str) -> list[str]:
  """The sources of a comma-joined source string ("folder:A, shards:B" -> ["folder:A", "shards:B"])."""
  return [p.strip() for p in spec.split(",") if p.strip()]


def source_key(part: str) -> tuple[str, Any]:
  """(kind, what a source part names): a TFDS dataset without its version (coco/2017:1.1.0 holds
  coco/2017's photos), a folder's or shard folder's real path."""
  kind, _, arg = part.partition(":")
  if kind == "tfds":
    return kind, arg.partition(":")[0]
  return kind, Path(os.path.realpath(os.path.expanduser(arg)))


def overlap(a: str, b: str) -> bool:
  """Whether source parts `a` and `b` share photos: the same TFDS dataset, or folders (or shard
  folders) one of which holds the other."""
  (kind, first), (other_kind, second) = source_key(a), source_key(b)
  if kind != other_kind:
    return False
  return first == second if kind == "tfds" else (first.is_relative_to(second) or second.is_relative_to(first))


def absolute(spec: str) -> str:
  """`spec` with its folder: and shards: paths made absolute, so that a run's config.json names
  the same photos whatever directory the run is resumed or scored from."""
  made = []
  for part in parts(spec):
    kind, _, arg = part.partition(":")
    if kind in ("folder", "shards") and arg and "://" not in arg:
      part = f"{kind}:{os.path.abspath(os.path.expanduser(arg))}"
    made.append(part)
  return ",".join(made)


def bad_source(part: str, expected: str = "'folder:PATH', 'shards:DIR' or 'tfds:NAME'") -> ValueError:
  """The error for a source string that is none of `expected`, with the likely fix: a kind with
  nothing after it (`folder:`), or a bare folder path."""
  kind, colon, arg = part.partition(":")
  if colon and not arg and kind in ("folder", "shards", "tfds"):
    return ValueError(f"data source {part!r} names no {'dataset' if kind == 'tfds' else 'folder'}: expected {expected}")
  bare = f"; for the photos in that folder, give folder:{part}" if os.path.isdir(os.path.expanduser(part)) else ""
  return ValueError(f"unknown data source {part!r}: expected {expected}{bare}")


@contextlib.contextmanager
def given_in(setting: str) -> Iterator[None]:
  """Starts the errors of the sources read inside with `setting`, the config field or flag they
  were given in (`config.data.train`, `--data`): the message names the value, this says where
  to change it. A FileNotFoundError stays one, a ValueError one; `setting=""` changes nothing."""
  try:
    yield
  except FileNotFoundError as e:
    if not setting:
      raise
    raise FileNotFoundError(f"{setting}: {e}") from e
  except ValueError as e:
    if not setting:
      raise
    raise ValueError(f"{setting}: {e}") from e


def resolve(spec: str, split: str, eval_fraction: float, warn: bool = True, setting: str = "",
            hint: str = "") -> ScanReport:
  """A source string -> the usable colour photos of `split` ("train", "eval" or "all").

  `warn=False`: folders that cannot be listed are not named again (another split said them).
  `setting`: where `spec` was given, to start the errors with (`given_in`). `hint`: what the
  command's user can change when `eval_fraction` leaves `split` without a photo ("raise
  --eval_fraction"), said in that error.
  """
  with given_in(setting):
    return _resolve(spec, split, eval_fraction, warn, hint)


def _resolve(spec: str, split: str, eval_fraction: float, warn: bool, hint: str) -> ScanReport:
  if split not in SPLITS:
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
  files, others, left_out = [], [], ScanReport(files=[])
  for part in parts(spec):
    kind, _, arg = part.partition(":")
    if kind == "folder" and arg:
      files += list_folder(arg, split, eval_fraction, warn)
    elif kind == "shards" and arg:
      others.append(_prepared(arg, split, eval_fraction, left_out))
    elif kind == "tfds" and arg:
      others.append(tfds_source.open_split(arg, split, eval_fraction))
    else:
      raise bad_source(part)
  if not files and not any(map(len, others)):
    folders = [p[len("folder:"):] for p in parts(spec) if p.startswith("folder:")]
    if split == "all" or not others and not any(list_folder(f, "all", eval_fraction, warn=False) for f in folders):
      raise ValueError(f"data source {spec!r} has no image files ({', '.join(IMAGE_EXTENSIONS)})")
    raise ValueError(f"data source {spec!r} has no image files in split {split!r}: eval_fraction "
                     f"{eval_fraction:g} puts every photo in the other split" + (f" ({hint})" if hint else ""))
  report = scan(files) if files else ScanReport(files=[])
  report.grayscale += left_out.grayscale
  report.unreadable.update(left_out.unreadable)
  found = [p for p in (report.files, *others) if len(p)]
  if not found:
    raise ValueError(f"data source {spec!r} ({split}): no usable colour photos ({report.summary()})")
  report.files = found[0] if len(found) == 1 else Concat(found)
  report.unchecked = sum(len(p) for p in others if isinstance(p, tfds_source.Subset))
  return report
