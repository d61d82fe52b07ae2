"""colorjax.prepare: folders and real TFDS builders (mock data) -> shards + manifest, resumable."""

import contextlib
import hashlib
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys

import msgpack
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from colorjax import prepare as prepare_lib
from colorjax.data import shards, sources
from test_shards import COCO


def _keys(directory, split):
  return [msgpack.unpackb(r)["key"] for r in shards.open_split(directory, split)]


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory):
  """12 colour photos of assorted sizes in nested folders, one gray, one truncated, one not an image."""
  root = tmp_path_factory.mktemp("photos")
  rng = np.random.default_rng(0)
  for i in range(12):
    path = root / f"sub{i % 2}" / f"p{i:02d}.jpg"
    path.parent.mkdir(exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (40 + 7 * i, 60, 3), dtype=np.uint8)).save(path, quality=90)
  Image.fromarray(np.full((40, 40), 128, np.uint8)).convert("RGB").save(root / "gray.jpg")
  (root / "truncated.jpg").write_bytes((root / "sub0" / "p00.jpg").read_bytes()[:300])
  (root / "notes.jpg").write_text("not a photo")
  return root


def test_folder_prepare_splits_like_training_and_reports_skips(photo_dir, tmp_path):
  out = tmp_path / "shards"
  manifest = prepare_lib.prepare(f"folder:{photo_dir}", str(out), size=32, eval_fraction=0.3,
                                 workers=2, shard_size=4, progress=False)
  for split in shards.SPLITS:
    want = sorted(os.path.relpath(f, photo_dir) for f in sources.list_folder(photo_dir, split, 0.3)
                  if os.path.basename(f).startswith("p"))
    assert sorted(_keys(out, split)) == want
    assert manifest["counts"][split] == len(want)
  skipped = {**manifest["skipped"]["train"], **manifest["skipped"]["eval"]}
  assert skipped["gray.jpg"] == "grayscale"
  assert "unreadable" in skipped["truncated.jpg"] and "not a JPEG, PNG, WebP, BMP or TIFF" in skipped["notes.jpg"]
  assert json.loads((out / shards.MANIFEST).read_text()) == manifest
  assert not (out / prepare_lib.PROGRESS).exists()
  rgb = shards.decode_record(shards.open_split(out, "train")[0])
  assert min(rgb.shape[:2]) == 32 and rgb.dtype == np.uint8


def test_a_file_name_that_is_not_utf8_is_split_by_its_bytes_and_prepared(photo_dir, tmp_path):
  """Found 2026-12-02: one such name (a Latin-1 'Müller.jpg' from an old archive) ended prepare and
  training on the folder with "'utf-8' codec can't encode character '\\udcfc'", naming no file."""
  photos = tmp_path / "photos"
  shutil.copytree(photo_dir / "sub0", photos)
  latin1 = os.fsdecode(b"M\xfcller.jpg")  # its byte 0xfc held as the surrogate U+DCFC
  shutil.copy(photos / "p00.jpg", photos / latin1)
  assert sources.in_eval_split(latin1, 0.5) == (int(hashlib.md5(b"M\xfcller.jpg").hexdigest()[:8], 16)
                                                 / 2 ** 32 < 0.5)
  manifest = prepare_lib.prepare(f"folder:{photos}", str(tmp_path / "shards"), size=32, eval_fraction=0.5,
                                 workers=1, progress=False)
  assert sum(manifest["counts"].values()) == 7
  split = "eval" if sources.in_eval_split(latin1, 0.5) else "train"
  assert str(photos / latin1) in sources.list_folder(photos, split, 0.5)  # training on folder: splits it alike
  assert "M\\xfcller.jpg" in _keys(tmp_path / "shards", split)  # the name, readable, in its record


def test_shards_changed_after_prepare_are_named_before_training(photo_dir, tmp_path):
  out = tmp_path / "shards"
  manifest = prepare_lib.prepare(f"folder:{photo_dir}", str(out), size=32, eval_fraction=0.3,
                                 workers=1, shard_size=4, progress=False)
  assert all(shard["bytes"] == (out / "train" / shard["file"]).stat().st_size
             for shard in manifest["shards"]["train"])
  last = out / "train" / manifest["shards"]["train"][-1]["file"]
  if os.geteuid() == 0:  # a volume whose owner this system has no name for, as in a container
    os.chown(last, 54321, 54321)
    shards.open_split(out, "train")
  last.write_bytes(last.read_bytes()[:-100])  # a partial copy
  with pytest.raises(ValueError, match=f"{last} is .* bytes, manifest.json says .*cut short"):
    shards.open_split(out, "train")
  last.unlink()
  with pytest.raises(FileNotFoundError, match=f"{last} is listed in manifest.json but missing"):
    shards.open_split(out, "all")
  shards.open_split(out, "eval")  # the other split is still whole
  (out / shards.MANIFEST).write_text('{"format": ')
  with pytest.raises(ValueError, match=f"{out / shards.MANIFEST} is not valid JSON"):
    shards.open_split(out, "eval")


def test_a_full_disk_while_writing_shards_is_an_os_error_naming_the_shard(photo_dir, tmp_path, monkeypatch):
  class FullDisk(prepare_lib.ArrayRecordWriter):
    def write(self, record):
      raise RuntimeError("write() failed: No space left on device")  # as array_record says it

  monkeypatch.setattr(prepare_lib, "ArrayRecordWriter", FullDisk)
  with pytest.raises(OSError, match="cannot write .*00000-of-00003.array_record: write.. failed: No space left"):
    prepare_lib.prepare(f"folder:{photo_dir}", str(tmp_path / "shards"), size=32, eval_fraction=0.3,
                        workers=1, shard_size=4, progress=False)


def test_killed_prepare_is_not_read_and_resumes(photo_dir, tmp_path, monkeypatch):
  out = tmp_path / "shards"
  real_write, calls = prepare_lib._write_shard, []

  def dies_on_second_shard(path, results, bar):
    calls.append(path)
    if len(calls) == 2:
      path.with_name(f".{path.name}.colorjax.tmp").write_bytes(b"half a shard")
      raise KeyboardInterrupt("killed")
    return real_write(path, results, bar)

  monkeypatch.setattr(prepare_lib, "_write_shard", dies_on_second_shard)
  with pytest.raises(KeyboardInterrupt):
    prepare_lib.prepare(f"folder:{photo_dir}", str(out), size=32, workers=1, shard_size=3, progress=False)
  with pytest.raises(FileNotFoundError, match="has not finished"):
    sources.resolve(f"shards:{out}", "train", 0.1)
  first = out / "train" / calls[0].name
  written_before = first.stat().st_mtime_ns
  with pytest.raises(ValueError, match=r"unfinished prepare with other arguments or inputs \(--size 32 there, 48 here\)"):
    prepare_lib.prepare(f"folder:{photo_dir}", str(out), size=48, workers=1, shard_size=3, progress=False)

  monkeypatch.setattr(prepare_lib, "_write_shard", real_write)
  manifest = prepare_lib.prepare(f"folder:{photo_dir}", str(out), size=32, workers=1, shard_size=3,
                                 progress=False)
  assert first.stat().st_mtime_ns == written_before  # finished shards are kept, not redone
  assert not list(out.rglob("*.tmp")) and not (out / prepare_lib.PROGRESS).exists()
  fresh = prepare_lib.prepare(f"folder:{photo_dir}", str(tmp_path / "fresh"), size=32, workers=1,
                              shard_size=3, progress=False)
  assert {k: v for k, v in manifest.items() if k != "created"} == {k: v for k, v in fresh.items() if k != "created"}
  for split in shards.SPLITS:
    assert _keys(out, split) == _keys(tmp_path / "fresh", split)
  assert prepare_lib.prepare(f"folder:{photo_dir}", str(out), size=32, workers=1, shard_size=3,
                             progress=False) == manifest  # already done: nothing rewritten
  with pytest.raises(ValueError, match="already holds other shards"):
    prepare_lib.prepare(f"folder:{photo_dir}", str(out), size=64, workers=1, progress=False)


@pytest.mark.parametrize("name", [COCO, "places365_small"])
def test_tfds_prepare_takes_a_seeded_subset_split_by_key(name, tmp_path):
  with tfds.testing.mock_data(num_examples=30):
    manifest = prepare_lib.prepare(f"tfds:{name}", str(tmp_path / "a"), size=24, limit=12, seed=3,
                                   eval_fraction=0.25, workers=1, progress=False)
    prepare_lib.prepare(f"tfds:{name}", str(tmp_path / "b"), size=24, limit=12, seed=3,
                        eval_fraction=0.25, workers=1, progress=False)
  keys = [f"train/{i}" for i in range(30)]
  for split in shards.SPLITS:
    want = [keys[i] for i in sources.split_indices(keys, split, 0.25, limit=12, seed=3)]
    assert _keys(tmp_path / "a", split) == want == _keys(tmp_path / "b", split)
  assert manifest["counts"]["train"] + manifest["counts"]["eval"] == 12
  assert manifest["tfds_datasets"][0].startswith(name + "/")  # with its version: a rebuild differs
  path = tmp_path / "a" / shards.MANIFEST
  for recorded, refused in ((None, False), ([f"{name}/0.0.1"], True)):  # from before the field; a rebuild
    old = json.loads(path.read_text())
    old.pop("tfds_datasets") if recorded is None else old.update(tfds_datasets=recorded)
    path.write_text(json.dumps(old))
    with tfds.testing.mock_data(num_examples=30), contextlib.ExitStack() as stack:
      if refused:
        stack.enter_context(pytest.raises(ValueError, match=f"the TFDS dataset was rebuilt or upgraded \\({name}/0.0.1 there"))
      prepare_lib.prepare(f"tfds:{name}", str(tmp_path / "a"), size=24, limit=12, seed=3,
                          eval_fraction=0.25, workers=1, progress=False)
  rgb = shards.decode_record(shards.open_split(tmp_path / "a", "train")[0])
  assert min(rgb.shape[:2]) == 24 and rgb.shape[2] == 3


def test_several_sources_prepare_as_one_split_like_training(photo_dir, tmp_path):
  """Split by relative path as training splits them; named by source, so equal names stay apart."""
  other = tmp_path / "other"
  (other / "sub0").mkdir(parents=True)
  rng = np.random.default_rng(1)
  for i in range(6):
    Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(other / f"q{i}.png")
  Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(other / "sub0" / "p00.jpg")
  Image.fromarray(np.full((40, 40), 99, np.uint8)).convert("RGB").save(other / "gray.jpg")
  out = tmp_path / "shards"
  sources_ = [f"folder:{photo_dir}", f"folder:{other}"]
  manifest = prepare_lib.prepare(",".join(sources_), str(out), size=32, eval_fraction=0.3,
                                 workers=1, progress=False)
  for split in shards.SPLITS:
    want = [f"{source}/{os.path.relpath(f, root)}" for source, root in zip(sources_, (photo_dir, other))
            for f in sources.list_folder(root, split, 0.3) if os.path.basename(f)[0] in "pq"]
    assert sorted(_keys(out, split)) == sorted(want)
  assert f"{sources_[1]}/sub0/p00.jpg" in _keys(out, "train") + _keys(out, "eval")
  skipped = {**manifest["skipped"]["train"], **manifest["skipped"]["eval"]}
  assert skipped[f"{sources_[0]}/gray.jpg"] == skipped[f"{sources_[1]}/gray.jpg"] == "grayscale"


def test_jpeg_quality_is_a_prepare_argument_and_part_of_its_identity(photo_dir, tmp_path):
  def sizes(out):
    return sum(len(shards.unpack_record(r)[1]) for s in shards.SPLITS for r in shards.open_split(out, s))
  common = dict(size=32, eval_fraction=0.3, workers=1, progress=False)
  best = prepare_lib.prepare(f"folder:{photo_dir}", str(tmp_path / "q95"), **common)
  small = prepare_lib.prepare(f"folder:{photo_dir}", str(tmp_path / "q40"), quality=40, **common)
  assert (best["quality"], small["quality"]) == (95, 40) and "JPEG q40" in small["record"]
  assert sizes(tmp_path / "q40") < 0.7 * sizes(tmp_path / "q95")
  with pytest.raises(ValueError, match="already holds other shards"):
    prepare_lib.prepare(f"folder:{photo_dir}", str(tmp_path / "q95"), quality=40, **common)


def test_rerun_into_other_shards_names_what_differs(photo_dir, tmp_path):
  photos, out = tmp_path / "photos", str(tmp_path / "shards")
  shutil.copytree(photo_dir, photos)
  common = dict(workers=1, progress=False)
  prepare_lib.prepare(f"folder:{photos}", out, size=32, eval_fraction=0.3, **common)
  with pytest.raises(ValueError, match=r"already holds other shards, by its manifest.json: "
                                       r"--eval-fraction 0.3 there, 0.2 here; give --out another directory$"):
    prepare_lib.prepare(f"folder:{photos}", out, size=32, eval_fraction=0.2, **common)  # the same photos
  with pytest.raises(ValueError, match=r": --size 32 there, 64 here; --quality 95 there, 80 here;"):
    prepare_lib.prepare(f"folder:{photos}", out, size=64, eval_fraction=0.3, quality=80, **common)
  shutil.copy(photos / "sub0" / "p00.jpg", photos / "sub1" / "new.jpg")
  with pytest.raises(ValueError, match=r": the input files differ \(15 there, 16 here\);"):
    prepare_lib.prepare(f"folder:{photos}", out, size=32, eval_fraction=0.3, **common)


def test_a_banner_is_prepared_as_a_window_and_a_photo_that_cannot_be_encoded_is_skipped(tmp_path, monkeypatch):
  (tmp_path / "in").mkdir()
  rng = np.random.default_rng(1)
  Image.fromarray(rng.integers(0, 256, (1, 300, 3), dtype=np.uint8)).save(tmp_path / "in" / "banner.png")
  Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)).save(tmp_path / "in" / "photo.png")
  # Resized whole, the 1x300 banner would be 76800 px wide: past JPEG's limit, and it ended prepare.
  prepare_lib.prepare(f"folder:{tmp_path / 'in'}", str(tmp_path / "a"), size=256, eval_fraction=0.0,
                      workers=1, progress=False)
  assert sorted(shards.decode_record(r).shape for r in shards.open_split(tmp_path / "a", "train")) == \
      [(256, 384, 3), (256, 1024, 3)]
  encode = shards.encode_record
  monkeypatch.setattr(shards, "encode_record",
                      lambda key, *a: (_ for _ in ()).throw(OSError("encoder error -2")) if "banner" in key else encode(key, *a))
  manifest = prepare_lib.prepare(f"folder:{tmp_path / 'in'}", str(tmp_path / "b"), size=32, eval_fraction=0.0,
                                 workers=1, progress=False)
  assert manifest["counts"]["train"] == 1
  assert manifest["skipped"]["train"] == {"banner.png": "cannot be encoded (encoder error -2)"}


def test_a_prepare_with_no_colour_photo_leaves_nothing_that_blocks_the_next(photo_dir, tmp_path):
  (tmp_path / "gray").mkdir()
  Image.fromarray(np.full((40, 40), 128, np.uint8)).save(tmp_path / "gray" / "g.png")
  out = tmp_path / "shards"
  with pytest.raises(ValueError, match="no colour photo to prepare \\(1 skipped, e.g. g.png: grayscale\\)"):
    prepare_lib.prepare(f"folder:{tmp_path / 'gray'}", str(out), size=32, workers=1, progress=False)
  assert not out.exists()
  manifest = prepare_lib.prepare(f"folder:{photo_dir}", str(out), size=32, workers=1, progress=False)
  assert sum(manifest["counts"].values()) == 12


@pytest.mark.parametrize("source, message", [
    ("folder:{tmp}/nope", "--source: image folder '{tmp}/nope' does not exist"),
    ("shards:{tmp}", "--source: unknown data source 'shards:{tmp}': expected 'folder:PATH' or 'tfds:NAME'"),
    ("folder:{tmp}", "--source folder:{tmp}: no colour photo to prepare"),
])
def test_a_bad_source_names_the_flag(tmp_path, source, message):
  with pytest.raises((ValueError, FileNotFoundError), match=f"^{message.format(tmp=tmp_path)}"):
    prepare_lib.prepare(source.format(tmp=tmp_path), str(tmp_path / "shards"), workers=1, progress=False)


@pytest.mark.parametrize("option, value", [("workers", -1), ("quality", 0), ("eval_fraction", 1.0)])
def test_an_option_out_of_range_is_named_before_anything_is_read(photo_dir, tmp_path, option, value):
  with pytest.raises(ValueError, match=f"--{option.replace('_', '-')} {value} is out of range"):
    prepare_lib.prepare(f"folder:{photo_dir}", str(tmp_path / "shards"), **{option: value})
  assert not (tmp_path / "shards").exists()


def test_decoding_workers_leave_ctrl_c_to_the_command(photo_dir):
  """Each worker would print its own KeyboardInterrupt traceback; the command stops them."""
  records = sources.list_folder(photo_dir)
  with prepare_lib._decoding(records, 32, 90, 2) as decode:
    assert len(list(decode([(0, "p00")]))) == 1
    for child in multiprocessing.active_children():
      ignored = int(next(line for line in open(f"/proc/{child.pid}/status") if line.startswith("SigIgn:")).split()[1], 16)
      assert ignored & (1 << (signal.SIGINT - 1)), child
  assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_prepare_that_leaves_no_eval_photo_says_what_a_run_on_it_needs(photo_dir, tmp_path):
  """Found 2026-12-02: `--limit 3` printed '3 train + 0 eval photos' and nothing more; training
  on the shards then stopped at its start."""
  run = subprocess.run([sys.executable, "-m", "colorjax.prepare", "--source", f"folder:{photo_dir / 'sub0'}", "--out",
                        str(tmp_path / "shards"), "--size", "32", "--eval-fraction", "0.01", "--workers", "1"],
                       capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(__file__)))})
  assert run.returncode == 0 and "6 train + 0 eval photos" in run.stdout, run.stderr[-2000:]
  assert "no photo fell in the eval split (--eval-fraction 0.01 of 6): a run on these shards needs config.data.eval" \
      in run.stderr
