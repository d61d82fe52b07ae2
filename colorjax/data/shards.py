"""Prepared photos in ArrayRecord shards: the record format, atomic writes and the reader.

A shard directory (written by `colorjax.prepare`) holds `train/` and `eval/` shards and
`manifest.json`, written last. Readers open only the shards the manifest lists, with their
record counts, so a prepare that was killed half-way is never read.

A record is msgpack `{"key": str, "jpeg": bytes}`: the photo resized to a short side of the
prepared size (aspect kept, so training still draws random crops from it), as JPEG q95 4:2:0.
Measured on 200 ADE20K photos at 256 px (mean 275 x 329) on a busy 2-core CPU; errors against
the uint8 photo, ab in model units ([-1, 1], x110 for Lab units):

  format           size/photo  decode   mean |RGB error|  mean |ab error|
  JPEG q95 4:2:0    34 KiB     1.0 ms   0.86 levels       0.0038 (0.4 Lab units)
  JPEG q95 4:4:4    40 KiB     1.3 ms   0.77              0.0029
  PNG              135 KiB     3-5 ms   0                 0
  raw uint8        261 KiB     ~0       0                 0

Raw saves ~1 ms of one core per photo but is 7.6x larger: Places365's 1.8 M photos would take
~470 GB instead of ~60 GB, and a GPU eating 1500 photos/s would need ~390 MB/s of reads (more
than gs:// gives one host). A core decodes ~1000 JPEGs/s, so a few cores feed one GPU; the
colour error is far below a just-noticeable difference (~2.3 Lab units), and 4:4:4 buys 0.1
Lab units for +17% size and +25% decode time.
"""

from __future__ import annotations

import collections.abc
import concurrent.futures
import contextlib
import errno
import hashlib
import io
import json
import os
import tempfile
from typing import Any, Iterator

import grain
import msgpack
import numpy as np
from etils import epath
from PIL import Image

from colorjax.data.images import READ_ERRORS, BadImageError, Unreadable, open_image

FORMAT = "colorjax-shards"
VERSION = 1
MANIFEST = "manifest.json"
JPEG_QUALITY = 95
SPLITS = ("train", "eval")


def encode_record(key: str, rgb: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
  """uint8 RGB [H, W, 3] -> one shard record. A key from a file name that is not UTF-8 (Python
  holds its bytes as surrogates, which msgpack refuses) is stored with them as \\xNN escapes."""
  jpeg = io.BytesIO()
  Image.fromarray(rgb).save(jpeg, "JPEG", quality=quality, subsampling=2)  # 2: 4:2:0
  key = key.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
  return msgpack.packb({"key": key, "jpeg": jpeg.getvalue()})


def unpack_record(record: bytes) -> tuple[str, bytes]:
  """A shard record -> (key, JPEG bytes); BadImageError if it is not one."""
  try:
    fields = msgpack.unpackb(record)
    return fields["key"], fields["jpeg"]
  except Exception as e:  # msgpack raises many types on garbage; all mean the same here
    raise BadImageError(f"shard record: not a colorjax record ({type(e).__name__}: {e})") from None


def decode_record(record: bytes, draft_size: int | None = None) -> np.ndarray:
  """A shard record -> uint8 RGB [H, W, 3]; BadImageError if it is damaged."""
  key, jpeg = unpack_record(record)
  return open_image(jpeg, draft_size=draft_size, name=key)[0]


@contextlib.contextmanager
def local_path_for(dest: epath.PathLike, overwrite: bool = True) -> Iterator[str]:
  """A local file to write `dest` through, so readers see all of it or none of it.

  Locally: a hidden `.NAME.colorjax.tmp` beside `dest` (not a name a user's own file has; a
  killed writer's is replaced by the next attempt), renamed at the end. Elsewhere (gs://): a
  temporary file uploaded at the end (an object appears only once its upload is complete). An
  exception leaves `dest` untouched.
  `overwrite=False` raises FileExistsError if `dest` exists by then, even if it appeared
  while `dest` was being written.
  """
  dest = epath.Path(dest)
  remote = "://" in os.fspath(dest)
  if remote:
    fd, tmp = tempfile.mkstemp(suffix=".tmp")
    os.close(fd)
  else:
    name = f".{dest.name}.colorjax.tmp"
    if len(os.fsencode(name)) > 255:  # NAME_MAX: dest's own name may be just under it
      name = f".{hashlib.sha1(os.fsencode(dest.name)).hexdigest()[:16]}.colorjax.tmp"
    tmp = os.path.join(os.path.dirname(os.path.abspath(dest)), name)
  try:
    yield tmp
    if remote:
      if not overwrite and dest.exists():
        raise FileExistsError(errno.EEXIST, "File exists", os.fspath(dest))
      epath.Path(tmp).copy(dest, overwrite=True)
    elif overwrite:
      os.replace(tmp, dest)
    else:
      _publish_new(tmp, os.fspath(dest))
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def _publish_new(tmp: str, dest: str) -> None:
  """`tmp` as `dest` if no file is there: a hard link fails rather than replace one."""
  try:
    os.link(tmp, dest)
  except FileExistsError:
    raise
  except OSError:  # no hard links on this file system (FAT, some FUSE mounts)
    if os.path.lexists(dest):
      raise FileExistsError(errno.EEXIST, "File exists", dest) from None
    os.replace(tmp, dest)


def write_json(dest: epath.PathLike, obj: Any) -> None:
  with local_path_for(dest) as tmp, open(tmp, "w") as f:
    json.dump(obj, f, indent=1)


def read_manifest(directory: epath.PathLike) -> dict[str, Any]:
  path = epath.Path(directory) / MANIFEST
  if not path.exists():
    raise FileNotFoundError(f"{os.fspath(directory)!r} has no {MANIFEST}: not a prepared shard "
                            "directory, or its `colorjax.prepare` has not finished (re-run it)")
  try:
    manifest = json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise ValueError(f"{os.fspath(path)} is not valid JSON ({e}): prepare again") from e
  if manifest.get("format") != FORMAT:
    raise ValueError(f"{os.fspath(path)} is not the manifest of a colorjax prepare")
  if manifest.get("version") != VERSION:
    raise ValueError(f"{os.fspath(path)}: format {manifest.get('format')} v{manifest.get('version')}, "
                     f"this colorjax reads {FORMAT} v{VERSION}: prepare it again")
  return manifest


def open_split(directory: epath.PathLike, split: str) -> ShardRecords:
  """Random access to the records of `split` ("train", "eval" or "all"), in manifest order."""
  manifest = read_manifest(directory)
  listed = [(epath.Path(directory) / s / shard["file"], shard)
            for s in (SPLITS if split == "all" else (split,)) for shard in manifest["shards"][s]
            if shard["records"]]
  if not listed:
    raise ValueError(f"shards:{os.fspath(directory)} has no records in split {split!r}")
  with concurrent.futures.ThreadPoolExecutor(16) as pool:  # one round trip each on a bucket
    list(pool.map(lambda listing: _check_shard(listing[0], listing[1].get("bytes")), listed))
  return ShardRecords([os.fspath(path) for path, _ in listed], [shard["records"] for _, shard in listed])


class ShardRecords(collections.abc.Sequence):
  """The records of shard files, in order; one the reader cannot read (a damaged chunk) is an
  `Unreadable` naming its file and position, skipped as a damaged photo is."""

  def __init__(self, paths: list[str], counts: list[int]):
    self.paths, self.ends = paths, np.cumsum(counts)
    # "path[0:n]" tells the reader the record count: no file is opened until it is read.
    self._source = grain.sources.ArrayRecordDataSource([f"{p}[0:{n}]" for p, n in zip(paths, counts)])

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, i: int) -> bytes | Unreadable:
    if not 0 <= i < len(self):
      raise IndexError(f"record {i} of {len(self)}")  # what ends a Sequence's iteration
    try:
      return self._source[i]
    except READ_ERRORS as e:
      shard = int(np.searchsorted(self.ends, i, side="right"))
      first = int(self.ends[shard - 1]) if shard else 0
      return Unreadable.of(f"{self.paths[shard]} record {i - first}", e)


def _check_shard(path: epath.Path, size: int | None) -> None:
  """A missing shard, or one whose size is not the one prepare wrote, named before training:
  grain would fail at its first record with the reader's error, which names no file."""
  try:  # os.stat locally: etils' stat looks up the owner's name, unknown for a container's volume
    length = path.stat().length if "://" in os.fspath(path) else os.stat(path).st_size
  except FileNotFoundError:
    raise FileNotFoundError(f"{os.fspath(path)} is listed in {MANIFEST} but missing: prepare again") from None
  if size is not None and length != size:
    raise ValueError(f"{os.fspath(path)} is {length} bytes, {MANIFEST} says {size}: it changed or was "
                     "cut short after prepare (a partial copy?): prepare again")
