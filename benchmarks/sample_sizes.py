#!/usr/bin/env python3
"""What one eval's sample picture costs on disk: the PNG in `workdir/samples` and its
TensorBoard record (what `keep_samples` and `tensorboard_samples` bound).

    python benchmarks/sample_sizes.py --data folder:../shared/data/ade20k [--image-size 256]

Draws 8 held-out photos as training does (`pipeline.eval_images`, centre crops), lays the
photos' own ab at 0.6 of its strength over their L as the prediction (a model's colour is
duller than the truth; the gray and real rows are exact), writes the grid as the trainer does
and prints one JSON line of bytes: the PNG, the TensorBoard record (the event file's growth)
and the record of the grid at half and a quarter of the size, for comparison.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import tempfile

import numpy as np
from PIL import Image

from colorjax import color, train, writers
from colorjax.data import pipeline, sources


def _event_file_bytes(folder: str, grid: np.ndarray | None) -> int:
  writer = writers.create_writer(folder, True)
  if grid is not None:
    writer.write_images(2, {"samples": grid[None]})
  writer.close()
  events = glob.glob(os.path.join(folder, "tensorboard", "events.out.tfevents.*"))
  if not events:  # colorjax's writer falls back to metrics.jsonl alone without TensorBoard
    raise SystemExit("sample_sizes.py measures TensorBoard's records, which need the tensorboard package: "
                     "pip install 'colorjax[tensorboard]'")
  return os.path.getsize(events[0])


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--data", required=True, help="a photo source, e.g. folder:PATH")
  parser.add_argument("--image-size", type=int, default=256)
  args = parser.parse_args()
  rgb = pipeline.eval_images(sources.resolve(args.data, "eval", 0.1).files, args.image_size, 8)
  l, ab = color.rgb_uint8_to_model(rgb, np)
  grid = train._sample_grid(rgb, np.asarray(color.to_uint8(color.model_to_rgb(l, 0.6 * ab, np), np)))
  with tempfile.TemporaryDirectory() as tmp:
    train._write_sample(grid, os.path.join(tmp, "step_0000002.png"))
    result = {"image_size": args.image_size, "grid": list(grid.shape),
              "png_bytes": os.path.getsize(os.path.join(tmp, "step_0000002.png"))}
    empty = _event_file_bytes(os.path.join(tmp, "empty"), None)
    for name, factor in (("tensorboard_bytes", 1), ("tensorboard_half_bytes", 2), ("tensorboard_quarter_bytes", 4)):
      small = np.asarray(Image.fromarray(grid).reduce(factor))
      result[name] = _event_file_bytes(os.path.join(tmp, name), small) - empty
  print(json.dumps(result))


if __name__ == "__main__":
  main()
