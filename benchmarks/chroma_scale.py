#!/usr/bin/env python3
"""How much colour can a model's pictures carry before held-out PSNR drops? (issue 8)

Colorizes the held-out photos once (as `evaluate`: 256 px centre crops, the model at its render
size, the ab laid over each crop's own L), then scales the predicted ab by each of `--scales`
and scores every photo at every scale (RGB uint8 PSNR, Hasler-Suesstrunk colourfulness). Prints
one JSON line with
- `global`: mean PSNR and colourfulness at each scale, the front a decode knob slides along
  (`--around mean` scales only each photo's deviations from its own mean ab, keeping its cast);
- `oracle`: each photo at its own best scale, maximising PSNR + lam * colourfulness, for several
  lam: what knowing how colourful each photo is would give this model's colours;
- `predicted`: each photo's scale picked from statistics of its L and of the model's prediction
  (ridge regressions of each scale's PSNR + lam * colourfulness, 5-fold cross-validated over
  the photos): how much of the oracle the model's own output can recover.

    python benchmarks/chroma_scale.py --workdir runs/quick_cpu --data folder:A,folder:B
"""

from __future__ import annotations

import argparse
import json

import jax
import numpy as np

from colorjax import metrics
from colorjax.colorize import Colorizer, _resize, recombine
from colorjax.data import sources
from colorjax.evaluate import Evaluation, crop_batches

LAMS = (0.0, 0.05, 0.1, 0.15)


@jax.jit
def _score(pred_u8: jax.Array, true_u8: jax.Array) -> tuple[jax.Array, jax.Array]:
  return metrics.psnr_ssim_mse(pred_u8, true_u8)["psnr"], metrics.colorfulness(pred_u8)


def _features(l_small: np.ndarray, ab: np.ndarray) -> np.ndarray:
  """Per photo: L's mean, spread and gradients; the prediction's chroma, its spread and mean a, b."""
  chroma = np.sqrt((ab ** 2).sum(-1)).reshape(len(ab), -1)
  return np.stack([l_small.mean((1, 2)), l_small.std((1, 2)),
                   np.abs(np.diff(l_small, axis=1)).mean((1, 2)), np.abs(np.diff(l_small, axis=2)).mean((1, 2)),
                   chroma.mean(1), chroma.std(1), np.quantile(chroma, 0.9, axis=1),
                   ab[..., 0].mean((1, 2)), ab[..., 1].mean((1, 2))], 1)


def _ridge_picks(x: np.ndarray, y: np.ndarray, folds: int = 5, lam: float = 10.0) -> np.ndarray:
  """Per photo, the column of `y` [N, S] that a ridge fit on the other folds predicts highest."""
  fold = np.random.default_rng(0).permutation(len(x)) % folds
  picks = np.zeros(len(x), int)
  for f in range(folds):
    train, test = fold != f, fold == f
    mu, sd = x[train].mean(0), x[train].std(0) + 1e-8
    design = lambda rows: np.c_[(x[rows] - mu) / sd, np.ones(rows.sum())]
    a = design(train)
    w = np.linalg.solve(a.T @ a + lam * np.eye(a.shape[1]), a.T @ y[train])
    picks[test] = (design(test) @ w).argmax(1)
  return picks


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--workdir", required=True)
  p.add_argument("--checkpoint", default="", help="best, latest or a step (default: the run's colorize_checkpoint)")
  p.add_argument("--data", required=True, help="source string, e.g. folder:PATH (the run's held-out share is used)")
  p.add_argument("--scales", default="0,0.25,0.5,0.75,1,1.25,1.5,1.75,2,2.5")
  p.add_argument("--around", default="zero", choices=["zero", "mean"],
                 help="scale ab around 0 (grey) or around each photo's mean predicted ab")
  args = p.parse_args()
  scales = [float(s) for s in args.scales.split(",")]
  colorizer = Colorizer.from_workdir(args.workdir, args.checkpoint)
  files = sources.resolve(args.data, "eval", colorizer.config.data.eval_fraction).files
  psnr, colour, feats = [], [], []
  for _, crops in crop_batches(files, 256, 16, Evaluation(rows=[])):
    lights = [colorizer.lightness(x) for x in crops]
    smalls = np.stack([_resize(l, colorizer.render_shape(*l.shape)) for l in lights])
    ab = colorizer.predict(smalls)
    centre = ab.mean((1, 2), keepdims=True) if args.around == "mean" else np.zeros_like(ab[:, :1, :1])
    scored = [_score(np.stack([recombine(l, c + s * (a - c)) for l, a, c in zip(lights, ab, centre)]), crops) for s in scales]
    psnr.append(np.stack([np.asarray(q) for q, _ in scored], 1))
    colour.append(np.stack([np.asarray(c) for _, c in scored], 1))
    feats.append(_features(smalls, ab))
  psnr, colour, x = np.concatenate(psnr), np.concatenate(colour), np.concatenate(feats)
  rows = np.arange(len(psnr))
  at = lambda picks: {"psnr": round(float(psnr[rows, picks].mean()), 3),
                      "colorfulness": round(float(colour[rows, picks].mean()), 2),
                      "mean_scale": round(float(np.asarray(scales)[picks].mean()), 3)}
  print(json.dumps({
      "bench": "chroma_scale", "workdir": args.workdir, "checkpoint": colorizer.checkpoint,
      "step": colorizer.step, "photos": len(psnr), "render_size": colorizer.render_size, "around": args.around,
      "global": {s: at(np.full(len(psnr), i)) for i, s in enumerate(scales)},
      "oracle": {lam: at((psnr + lam * colour).argmax(1)) for lam in LAMS},
      "predicted": {lam: at(_ridge_picks(x, psnr + lam * colour)) for lam in LAMS}}))


if __name__ == "__main__":
  main()
