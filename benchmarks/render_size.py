#!/usr/bin/env python3
"""Does a model's colour depend on the render size? (issue 8)

Colorizes the same held-out photos at several `--render-size`s and prints, as one JSON line,
the mean absolute difference of the predicted a and b (CIE Lab units) of each size against
the first, and each size's mean chroma:

    python benchmarks/render_size.py --workdir runs/r18 --data folder:/photos --sizes 128,256,512

As `colorize` does, the coarse colour comes from the training size; `--colour-at-render-size`
measures the colour a render of each size gives by itself.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from colorjax import color
from colorjax.colorize import Colorizer
from colorjax.data import sources
from colorjax.evaluate import Evaluation, crop_batches


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--workdir", required=True)
  p.add_argument("--data", required=True, help="source string, e.g. folder:PATH")
  p.add_argument("--split", default="eval", choices=["all", "eval"])
  p.add_argument("--sizes", default="128,256,512")
  p.add_argument("--photos", type=int, default=50)
  p.add_argument("--crop", type=int, default=512, help="photos are center-cropped to this size first")
  p.add_argument("--checkpoint", default="", help="as colorize's flag (default: the run's)")
  p.add_argument("--colour-at-render-size", action="store_true", help="as colorize's flag")
  args = p.parse_args()
  sizes = [int(s) for s in args.sizes.split(",")]
  colorizers = {s: Colorizer.from_workdir(args.workdir, args.checkpoint, render_size=s,
                                          colour_at_render_size=args.colour_at_render_size) for s in sizes}
  files = sources.resolve(args.data, args.split, colorizers[sizes[0]].config.data.eval_fraction).files
  left_out = Evaluation(rows=[])
  _, crops = next(crop_batches(files, args.crop, args.photos, left_out))  # gray or broken photos left out
  ab = {s: np.stack([color.rgb_to_lab(c.astype(np.float32) / 255, np)[..., 1:]
                     for c in colorizers[s].colorize_batch(crops)]) for s in sizes}
  ref = sizes[0]
  print(json.dumps({"workdir": args.workdir, "photos": len(crops), "grayscale_left_out": len(left_out.grayscale),
                    "unreadable_left_out": len(left_out.unreadable),
                    "checkpoint": colorizers[ref].checkpoint, "step": colorizers[ref].step,
                    "crop": args.crop, "reference": ref, "colour_at_render_size": args.colour_at_render_size,
                    "mean_abs_ab_diff": {s: round(float(np.abs(ab[s] - ab[ref]).mean()), 3) for s in sizes[1:]},
                    "mean_chroma": {s: round(float(np.hypot(*np.moveaxis(ab[s], -1, 0)).mean()), 2) for s in sizes}}))


if __name__ == "__main__":
  main()
