"""Where photos come from: a source string from the config -> a list of usable image files.

`folder:PATH` (recursive) is the first source; several are joined with commas
(`folder:a,folder:b`). The train/eval split is a hash of each file's path relative to its
folder, so it is the same on every machine, in every process and across runs, and adding
photos never moves old ones between splits.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import logging
import os
from pathlib import Path

from colorjax.data.images import IMAGE_EXTENSIONS, BadImageError, is_grayscale, open_image

SPLITS = ("train", "eval", "all")


@dataclasses.dataclass
class ScanReport:
  """What a source held: usable colour photos and why the others were left out."""
  files: list[str]
  grayscale: list[str] = dataclasses.field(default_factory=list)
  unreadable: dict[str, str] = dataclasses.field(default_factory=dict)

  def summary(self) -> str:
    return (f"{len(self.files)} colour photos, {len(self.grayscale)} grayscale left out, "
            f"{len(self.unreadable)} unreadable skipped")


def in_eval_split(relpath: str, eval_fraction: float) -> bool:
  """Deterministic split: md5 of the relative path, as a fraction of 2**32."""
  h = int(hashlib.md5(relpath.replace(os.sep, "/").encode()).hexdigest()[:8], 16)
  return h / 2 ** 32 < eval_fraction


def list_folder(root: str | os.PathLike, split: str = "all", eval_fraction: float = 0.1) -> list[str]:
  """Image files under `root` (recursive, sorted) that belong to `split`."""
  if split not in SPLITS:
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
  root = Path(root).expanduser()
  if not root.is_dir():
    raise FileNotFoundError(f"image folder {str(root)!r} does not exist")
  files = []
  for path in sorted(root.rglob("*")):
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


def resolve(spec: str, split: str, eval_fraction: float) -> ScanReport:
  """A source string -> the usable colour photos of `split`."""
  files = []
  for part in filter(None, (p.strip() for p in spec.split(","))):
    kind, _, arg = part.partition(":")
    if kind != "folder" or not arg:
      raise ValueError(f"unknown data source {part!r}: expected 'folder:PATH'")
    files += list_folder(arg, split, eval_fraction)
  if not files:
    raise ValueError(f"data source {spec!r} has no image files in split {split!r}")
  report = scan(files)
  if not report.files:
    raise ValueError(f"data source {spec!r} ({split}): no usable colour photos ({report.summary()})")
  return report
