"""`tfds:NAME`: a TFDS image dataset already on disk, read by random access with grain.

Any TFDS dataset with an `image` feature works (`coco/2017`, `places365_small`, ...); it is
read from the default TFDS data directory (`TFDS_DATA_DIR`) and never downloaded here. Only
the dataset's own `train` split is used; it is divided into train/eval by the md5 of each
example's key `train/INDEX` (`sources.split_indices`, the rule of folder sources), so
`colorjax.prepare --source tfds:NAME` without --limit holds out exactly the photos that
training on `tfds:NAME` does.

Gray examples (about 1% of COCO) are left out as they are read (`pipeline.load_rgb`): training
skips them and `evaluate` counts them as grayscale, as the scan does for folders. Prepared
shards leave them out once, up front.
"""

from __future__ import annotations

import collections.abc
import os
from typing import Any

from colorjax.data import sources
from colorjax.data.images import READ_ERRORS, Unreadable


class Subset(collections.abc.Sequence):
  """The examples `indices` of a random-access source (what grain's MapDataset needs)."""

  def __init__(self, source: collections.abc.Sequence, indices: collections.abc.Sequence[int], name: str = ""):
    self.source, self.indices, self.name = source, indices, name

  def __len__(self) -> int:
    return len(self.indices)

  def __getitem__(self, i: int) -> Any:
    """The example, with its name `colorjax_key` (tfds:NAME/train/INDEX, as prepare names it),
    or an `Unreadable` named so."""
    index = int(self.indices[i])
    key = f"tfds:{self.name}/train/{index}"
    try:
      return {**self.source[index], "colorjax_key": key}
    except READ_ERRORS as e:  # a damaged file (riegeli's error names none)
      return Unreadable.of(key, e)


def data_source(name: str) -> collections.abc.Sequence[dict[str, Any]]:
  """The `train` split of TFDS dataset `name`, decoded to numpy examples on access.

  A built dataset is read from its files (their features.json says how to decode them), not
  through TFDS's code for it: that code may need TensorFlow just to describe the dataset (coco's
  does), which the GPU images do not have; reading needs none. The code is asked only about a
  dataset that is not on disk, to say why.
  """
  import tensorflow_datasets as tfds  # here: only tfds: sources pay for importing it
  from tensorflow_datasets.core import read_only_builder  # what tfds.builder reads files with

  data_dir = os.environ.get("TFDS_DATA_DIR")  # as it is now: tfds reads it once, when first imported
  where = f"{data_dir or '~/tensorflow_datasets'} (TFDS_DATA_DIR)"
  build = f"tfds build {name} --file_format=array_record" + (f" --data_dir={data_dir}" if data_dir else "")
  not_built = f"tfds:{name} is not built in {where}: run `{build}` first; colorjax never downloads"
  try:
    try:
      builder = read_only_builder.builder_from_files(name, data_dir=data_dir)
    except tfds.core.DatasetNotFoundError:
      builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.DatasetNotFoundError:
    raise ValueError(f"tfds:{name}: no TFDS dataset of that name, registered or built in {where}; "
                     "e.g. tfds:coco/2017, tfds:places365_small") from None
  except (AssertionError, ValueError) as e:  # e.g. a version or config it does not have
    raise ValueError(f"tfds:{name}: {' '.join(str(e).split())}") from None
  except ModuleNotFoundError as e:  # registered, but its code needs what is not installed (coco: TensorFlow)
    raise ValueError(f"{not_built} (TFDS's code for it: {str(e).rsplit(': ', 1)[-1]})") from None
  try:
    source = builder.as_data_source(split="train")
  except (KeyError, AssertionError) as e:
    raise ValueError(f"{not_built} ({' '.join(str(e).split())})") from None
  except NotImplementedError:  # a format without random access: the builder's default if not built
    if not builder.is_prepared():
      raise ValueError(not_built) from None
    # `tfds build` writes TFRecord unless told; grain needs ArrayRecord's random access.
    raise ValueError(f"tfds:{name} in {where} is built as {builder.info.file_format.name}; colorjax reads "
                     f"ArrayRecord: rebuild with `{build}`, or convert it with `tfds convert_format "
                     f"--dataset_dir={builder.data_dir} --out_file_format=array_record`") from None
  if "image" not in source.dataset_info.features:
    raise ValueError(f"tfds:{name} has no 'image' feature: not an image dataset")
  return source


def example_keys(num_examples: int) -> list[str]:
  return [f"train/{i}" for i in range(num_examples)]


def open_split(name: str, split: str, eval_fraction: float) -> Subset:
  """The examples of `split` as grain records (dicts with an `image` uint8 [H, W, 3])."""
  source = data_source(name)
  return Subset(source, sources.split_indices(example_keys(len(source)), split, eval_fraction), name)
