"""Training from `shards:DIR` and `tfds:NAME`: disjoint process shares, resume, damaged records."""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import grain
import msgpack
import numpy as np
import orbax.checkpoint as ocp
import pytest
import tensorflow_datasets as tfds
from array_record.python.array_record_module import ArrayRecordWriter
from PIL import Image

from colorjax import prepare as prepare_lib
from colorjax.evaluate import Evaluation, crop_batches, record_name
from colorjax.data import images, pipeline, shards, sources, tfds_source
from test_train import without_tensorflow

# 12 flat colours far apart: a crop's mean colour names the photo it came from.
PALETTE = np.array([[r, g, b] for r in (20, 230) for g in (20, 125, 230) for b in (100, 180)], np.float32)


def _ids(batches):
  means = np.concatenate([b.reshape(b.shape[0], -1, 3).mean(1) for b in batches])
  return [int(np.argmin(np.abs(PALETTE - m).sum(1))) for m in means]


@pytest.fixture(scope="module")
def palette_shards(tmp_path_factory):
  """Shards of the 12 palette photos, all in train (eval_fraction 0), 5 per shard."""
  root = tmp_path_factory.mktemp("palette")
  for i, colour in enumerate(PALETTE.astype(np.uint8)):
    Image.fromarray(np.broadcast_to(colour, (24, 30 + i, 3)).copy()).save(root / f"c{i:02d}.png")
  out = root / "shards"
  prepare_lib.prepare(f"folder:{root}", str(out), size=24, eval_fraction=0.0, workers=1,
                      shard_size=5, progress=False)
  return out


def test_record_round_trip_and_damage():
  y, x = np.mgrid[:20, :30]
  rgb = np.stack([y * 12, x * 8, 255 - x * 8], -1).astype(np.uint8)
  back = shards.decode_record(shards.encode_record("a/b.jpg", rgb))
  assert back.shape == rgb.shape and np.abs(back.astype(int) - rgb).mean() < 2
  with pytest.raises(images.BadImageError, match="not a colorjax record"):
    shards.decode_record(b"\x93garbage")
  jpeg = msgpack.unpackb(shards.encode_record("a/b.jpg", rgb))["jpeg"]
  with pytest.raises(images.BadImageError, match="a/b.jpg: unreadable"):
    shards.decode_record(msgpack.packb({"key": "a/b.jpg", "jpeg": jpeg[:len(jpeg) // 2]}))


def test_two_processes_read_disjoint_complete_shares_reshuffled_each_epoch(palette_shards):
  files = sources.resolve(f"shards:{palette_shards}", "train", 0.0).files
  assert len(files) == 12
  seen = []
  for index in (0, 1):
    it = iter(pipeline.train_dataset(files, 16, 2, seed=7, shard_index=index, shard_count=2))
    ids = _ids([next(it) for _ in range(6)])  # two epochs of 6 photos
    assert sorted(ids[:6]) == sorted(ids[6:]) and ids[:6] != ids[6:]
    seen.append(set(ids[:6]))
  assert not seen[0] & seen[1] and seen[0] | seen[1] == set(range(12))


def test_restored_iterator_continues_with_the_next_batch(palette_shards, tmp_path):
  files = sources.resolve(f"shards:{palette_shards}", "train", 0.0).files
  make = lambda: iter(pipeline.train_dataset(files, 16, 4, seed=1, shard_index=0, shard_count=1))
  it = make()
  for _ in range(4):
    next(it)
  mgr = ocp.CheckpointManager(tmp_path / "ckpt", options=ocp.CheckpointManagerOptions(
      enable_async_checkpointing=False))
  mgr.save(4, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it)))
  expected = [next(it) for _ in range(3)]
  resumed = make()
  mgr.restore(4, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(resumed)))
  for want in expected:
    np.testing.assert_array_equal(next(resumed), want)


def test_damaged_record_is_skipped(palette_shards, tmp_path, caplog):
  """A shard whose second record is garbage: training and eval go on without it."""
  good = list(shards.open_split(palette_shards, "train"))[:3]
  damaged = tmp_path / "damaged.array_record"
  writer = ArrayRecordWriter(str(damaged), "group_size:1")
  for record in (good[0], b"\x00not a record", *good[1:], good[0][:-100]):
    writer.write(record)
  writer.close()
  files = grain.sources.ArrayRecordDataSource([str(damaged)])
  batch = next(iter(pipeline.train_dataset(files, 16, 3, seed=0, shard_index=0, shard_count=1)))
  assert sorted(_ids([batch])) == sorted(_ids([pipeline.eval_images(good, 16, 3)]))
  assert len(pipeline.eval_images(files, 16, 10)) == 3
  assert "not a colorjax record" in caplog.text


def test_a_damaged_chunk_is_skipped_by_its_shard_file_and_position(palette_shards, tmp_path, caplog):
  """Bytes changed in place (bit rot, a bad copy; the size is as prepare wrote it): the reader's
  error names no file, and read before the pipeline's skipping map it ended the run."""
  damaged = tmp_path / "shards"
  damaged.mkdir()
  for name in ("manifest.json", "train", "eval"):
    subprocess.run(["cp", "-r", str(palette_shards / name), str(damaged)], check=True)
  first = damaged / "train" / sorted(os.listdir(damaged / "train"))[0]
  original = first.read_bytes()
  for offset in range(200, 4000, 200):  # 16 bytes inside one record's chunk (each is ~500 bytes)
    first.write_bytes(original[:offset] + bytes(b ^ 0xFF for b in original[offset:offset + 16]) + original[offset + 16:])
    files = sources.resolve(f"shards:{damaged}", "train", 0.0).files
    read = [files[i] for i in range(len(files))]
    bad = [i for i, r in enumerate(read) if isinstance(r, images.Unreadable)]
    if len(bad) == 1:
      break
  assert len(bad) == 1 and read[bad[0]].name == f"{first} record {bad[0]}", bad
  assert "Corrupted Riegeli" in read[bad[0]].why
  batch = next(iter(pipeline.train_dataset(files, 16, 11, seed=0, shard_index=0, shard_count=1)))
  assert sorted(_ids([batch])) == sorted(set(range(12)) - {_ids([pipeline.eval_images(
      [r for i, r in enumerate(shards.open_split(palette_shards, "train")) if i == bad[0]], 16, 1)])[0]})
  assert f"skipping {first} record {bad[0]}: cannot be read (Corrupted Riegeli" in caplog.text
  left_out = Evaluation(rows=[])
  assert sum(len(names) for names, _ in crop_batches(files, 16, 4, left_out)) == 11
  assert list(left_out.unreadable) == [f"{first} record {bad[0]}"]
  # The same file read as a TFDS dataset's (their files are ArrayRecord too), and by prepare.
  raw = grain.sources.ArrayRecordDataSource([str(first)])
  unreadable = tfds_source.Subset(raw, [bad[0]], "places365_small")[0]
  assert unreadable.name == f"tfds:places365_small/train/{bad[0]}" and "Corrupted Riegeli" in unreadable.why
  prepare_lib._set_records(raw)
  name, record, why = prepare_lib._prepare_one((bad[0], "train/x"), 24, 90)
  assert (name, record) == ("train/x", None) and why.startswith("cannot be read (Corrupted Riegeli")


def test_sources_mix_folders_and_shards(palette_shards):
  folder = palette_shards.parent
  both = sources.resolve(f"folder:{folder},shards:{palette_shards}", "all", 0.0)
  assert len(both.files) == 24
  assert pipeline.eval_images(both.files, 16, 24).shape == (24, 16, 16, 3)


NO_TENSORFLOW = importlib.util.find_spec("tensorflow") is None
# TFDS's coco code (which mock_data runs) and building any TFDS image dataset need TensorFlow.
COCO = pytest.param("coco/2017", marks=pytest.mark.skipif(NO_TENSORFLOW, reason="TFDS's coco code needs TensorFlow"))


@pytest.mark.parametrize("name", [COCO, "places365_small"])
def test_tfds_source_trains_directly(name):
  with tfds.testing.mock_data(num_examples=20):
    train = sources.resolve(f"tfds:{name}", "train", 0.3).files
    held_out = sources.resolve(f"tfds:{name}", "eval", 0.3).files
    assert len(train) + len(held_out) == 20 and not set(train.indices) & set(held_out.indices)
    assert sources.resolve(f"tfds:{name}", "train", 0.3).summary().startswith(
        f"{len(train)} colour photos ({len(train)} of them TFDS examples, not scanned: the gray ones are left out")
    batch = next(iter(pipeline.train_dataset(train, 32, 4, seed=0, shard_index=0, shard_count=1)))
    assert batch.shape == (4, 32, 32, 3) and batch.dtype == np.uint8
    assert pipeline.eval_images(held_out, 32, 2).shape == (2, 32, 32, 3)
    assert record_name(held_out[1], 1) == f"tfds:{name}/train/{held_out.indices[1]}"  # as prepare names it


@pytest.mark.parametrize("name", ["places365_small", "coco/2017"])  # coco's code needs TensorFlow to say so
def test_a_tfds_dataset_not_built_is_named_and_never_downloaded(name, tmp_path, monkeypatch):
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
  with pytest.raises(ValueError, match=f"tfds:{name} is not built in {tmp_path} .*colorjax never downloads"):
    sources.resolve(f"tfds:{name}", "train", 0.1)
  assert not any(tmp_path.rglob("*.tar*")) and not any(tmp_path.rglob("*.zip"))


class ColorjaxTinyPhotos(tfds.core.GeneratorBasedBuilder):
  """A 4-photo TFDS dataset, built in a test as `tfds build` builds by default (TFRecord)."""
  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(
        {"image": tfds.features.Image(shape=(None, None, 3))}))

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples()}

  def _generate_examples(self):
    for i in range(4):
      yield i, {"image": np.random.default_rng(i).integers(0, 256, (16, 16, 3), np.uint8)}


@pytest.mark.skipif(NO_TENSORFLOW, reason="building a TFDS image dataset needs TensorFlow")
def test_a_tfds_dataset_built_as_tfrecord_says_what_to_do(tmp_path, monkeypatch):
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
  ColorjaxTinyPhotos(data_dir=str(tmp_path), file_format="tfrecord").download_and_prepare()
  with pytest.raises(ValueError, match=r"built as TFRECORD; colorjax reads ArrayRecord: rebuild with "
                                       r"`tfds build colorjax_tiny_photos --file_format=array_record"):
    sources.resolve("tfds:colorjax_tiny_photos", "train", 0.1)


@pytest.mark.skipif(NO_TENSORFLOW, reason="building a TFDS image dataset needs TensorFlow")
def test_a_built_tfds_dataset_is_read_where_tensorflow_is_not(tmp_path):
  """coco/2017 built where TensorFlow is, read on a GPU image without it: from its files, as
  TFDS's coco code cannot even describe the dataset there."""
  from tensorflow_datasets.object_detection import coco

  class Coco(coco.Coco, skip_registration=True):  # coco/2017's features, 3 generated photos
    name = "coco"

    def _split_generators(self, dl_manager):
      return {"train": self._generate_examples()}

    def _generate_examples(self, *unused):
      for i in range(3):
        yield i, {"image": np.full((20 + i, 30, 3), PALETTE[i], np.uint8),  # stored as JPEG
                  "image/filename": f"{i}.jpg", "image/id": i,
                  "objects": {"area": [4], "bbox": [tfds.features.BBox(0.1, 0.2, 0.5, 0.6)], "id": [i],
                              "is_crowd": [False], "label": [1]}}

  Coco(config="2017", data_dir=str(tmp_path / "built"), file_format="array_record").download_and_prepare(
      download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  script = textwrap.dedent("""\
      import json, os, sys
      from colorjax.data import sources
      photos = sources.resolve("tfds:coco/2017", "train", 0.0).files
      print(json.dumps(sorted((int(p["image/id"]), p["image"].shape, p["image"].mean((0, 1)).tolist())
                              for p in photos)), "tensorflow" in sys.modules)
      os.environ["TFDS_DATA_DIR"] = sys.argv[1]
      sources.resolve("tfds:coco/2017", "train", 0.0)
      """)
  env = {**os.environ, "PYTHONPATH": without_tensorflow(tmp_path / "no_tf"), "TFDS_DATA_DIR": str(tmp_path / "built")}
  run = subprocess.run([sys.executable, "-c", script, str(tmp_path / "empty")], env=env, capture_output=True, text=True)
  assert run.stdout.split("\n")[0].endswith(" False"), run.stderr[-2000:]  # TensorFlow never imported
  photos = json.loads(run.stdout.split("\n")[0][:-len(" False")])
  assert [(i, tuple(shape)) for i, shape, _ in photos] == [(i, (20 + i, 30, 3)) for i in range(3)]
  np.testing.assert_allclose([mean for *_, mean in photos], PALETTE[:3], atol=2)
  assert (f"ValueError: tfds:coco/2017 is not built in {tmp_path / 'empty'} (TFDS_DATA_DIR): run `tfds build "
          f"coco/2017 --file_format=array_record --data_dir={tmp_path / 'empty'}` first; colorjax never downloads "
          f"(TFDS's code for it: No module named 'tensorflow')") in run.stderr, run.stderr[-2000:]


def test_a_misnamed_tfds_dataset_says_what_to_do():
  with pytest.raises(ValueError, match=r"tfds:coco2017: no TFDS dataset of that name.*e.g. tfds:coco/2017") as e:
    sources.resolve("tfds:coco2017", "train", 0.1)
  assert len(str(e.value)) < 300
  with pytest.raises(ValueError, match=r"^tfds:places365_small:9.9.9: .*"):  # a version it does not have
    sources.resolve("tfds:places365_small:9.9.9", "train", 0.1)


def test_gray_tfds_examples_are_left_out_of_training_and_scoring():
  rng = np.random.default_rng(0)
  colour = [{"image": rng.integers(0, 256, (40, 48, 3), np.uint8)} for _ in range(6)]
  gray = [{"image": np.repeat(rng.integers(0, 256, (40, 48, 1), np.uint8), 3, -1)} for _ in range(3)]
  records = [gray[0], *colour[:3], gray[1], *colour[3:], gray[2]]  # TFDS examples, as `tfds:` gives them
  with pytest.raises(images.GrayscaleError, match="TFDS example"):
    pipeline.load_rgb(gray[0], 32)
  batches = iter(pipeline.train_dataset(records, 32, 3, seed=0, shard_index=0, shard_count=1))
  for _ in range(4):  # two epochs: every batch is full and holds colour photos only
    batch = next(batches)
    assert batch.shape == (3, 32, 32, 3) and not any(images.is_grayscale(x) for x in batch)
  assert len(pipeline.eval_images(records, 32, 10)) == 6
  left_out = Evaluation(rows=[])
  names = [n for names, _ in crop_batches(records, 32, 4, left_out) for n in names]
  assert names == ["#1", "#2", "#3", "#5", "#6", "#7"]
  assert left_out.grayscale == ["#0", "#4", "#8"] and not left_out.unreadable


def test_files_are_written_whole_and_never_over_a_users_file(tmp_path):
  dest = tmp_path / "photo.png"
  (tmp_path / "photo.png.tmp").write_text("the user's own")  # a name a user's file may have
  with shards.local_path_for(dest) as tmp:
    open(tmp, "w").write("first")
    assert not dest.exists()  # readers see all of it or nothing
  assert dest.read_text() == "first" and (tmp_path / "photo.png.tmp").read_text() == "the user's own"
  with pytest.raises(FileExistsError):
    with shards.local_path_for(dest, overwrite=False) as tmp:
      open(tmp, "w").write("second")
  assert dest.read_text() == "first"
  with pytest.raises(FileExistsError):
    with shards.local_path_for(tmp_path / "new.png", overwrite=False) as tmp:
      open(tmp, "w").write("ours")
      (tmp_path / "new.png").write_text("made by the user meanwhile")
  assert (tmp_path / "new.png").read_text() == "made by the user meanwhile"
  assert sorted(p.name for p in tmp_path.iterdir()) == ["new.png", "photo.png", "photo.png.tmp"]
  longest = tmp_path / ("x" * 251 + ".png")  # 255 bytes: a name the file system takes, with no room to add to it
  with shards.local_path_for(longest) as tmp:
    open(tmp, "w").write("long")
  assert longest.read_text() == "long"
