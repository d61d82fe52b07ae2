#!/usr/bin/env python3
"""A picture to judge colorizers by eye: one row per photo, gray | each system | real.

For black-and-white originals (`--no-real`) the last column is left out.

    python benchmarks/picture.py --out docs/heldout.jpg photo1.jpg photo2.jpg \
        --column "PyTorch L1=runs/vs_torch/torch_l1" --column "colorjax=runs/pics"

Each column is a folder of colorized pictures named `<photo stem>.png` (what `colorize` and
`benchmarks/torch_pix2pix.py colorize` write); every cell is the centre square of its picture.
"""

from __future__ import annotations

import argparse
import os

from PIL import Image, ImageDraw, ImageOps

LABEL_H = 22


def square(im: Image.Image, size: int) -> Image.Image:
  return ImageOps.fit(im.convert("RGB"), (size, size), Image.Resampling.BICUBIC)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("photos", nargs="+", help="the real colour photos, one row each")
  p.add_argument("--column", action="append", default=[], metavar="NAME=DIR", required=True)
  p.add_argument("--out", required=True)
  p.add_argument("--cell", type=int, default=192)
  p.add_argument("--no-real", action="store_true", help="the photos are black and white: no real column")
  args = p.parse_args()
  if bad := [c for c in args.column if "=" not in c]:
    p.error(f"--column takes NAME=DIR, got {bad[0]!r}")
  columns = [c.split("=", 1) for c in args.column]
  names = ["gray input"] + [name for name, _ in columns] + ([] if args.no_real else ["real"])
  size = args.cell
  grid = Image.new("RGB", (size * len(names), LABEL_H + size * len(args.photos)), "white")
  draw = ImageDraw.Draw(grid)
  for i, name in enumerate(names):
    draw.text((i * size + 4, 4), name, fill="black")
  for row, photo in enumerate(args.photos):
    real = Image.open(photo)
    stem = os.path.splitext(os.path.basename(photo))[0]
    cells = [real.convert("L")] + [Image.open(os.path.join(d, stem + ".png")) for _, d in columns]
    for i, cell in enumerate(cells if args.no_real else cells + [real]):
      grid.paste(square(cell, size), (i * size, LABEL_H + row * size))
  grid.save(args.out, quality=90)
  print(f"wrote {args.out}: {len(args.photos)} photos x {len(names)} columns")


if __name__ == "__main__":
  main()
