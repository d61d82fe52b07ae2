#!/usr/bin/env python3
"""The pix2pix step's convolutions one by one, colorjax beside PyTorch (forward + both gradients).

    python benchmarks/layers_vs_torch.py [--image-size 256] [--batch-size 16]

One JSON line per layer of the pix2pix U-Net (num_downs = log2(size)) and the 70x70 PatchGAN:
milliseconds for the output, the input gradient and the kernel gradient, each as colorjax
computes it on this backend (`colorjax.models.layers`) and as PyTorch's `Conv2d` /
`ConvTranspose2d` do. Where the whole step is slower than the sum of its layers, the time goes
elsewhere (`python -m colorjax.bench step --profile 2` shows where).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import statistics
import sys

import jax
import jax.numpy as jnp
import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
from colorjax.bench import timings  # noqa: E402
from colorjax.models import layers  # noqa: E402


def specs(size: int) -> list[tuple[str, str, int, int, int, int]]:
  """(name, "conv" | "up", input side, Cin, Cout, stride) of every layer with >= 8x8 outputs."""
  n = int(math.log2(size))
  widths = [64, 128, 256, 512] + [512] * (n - 4)
  out = []
  for i in range(n):
    side = size >> i
    if side // 2 >= 8:
      out.append((f"G down{i}", "conv", side, widths[i - 1] if i else 1, widths[i], 2))
  for i in reversed(range(n)):
    side = size >> (i + 1)
    if side * 2 >= 8:
      cin = widths[i] * (1 if i == n - 1 else 2)
      out.append((f"G up{i}", "up", side, cin, widths[i - 1] if i else 2, 2))
  d_widths = [3, 64, 128, 256, 512]
  for i in range(3):
    out.append((f"D conv{i}", "conv", size >> i, d_widths[i], d_widths[i + 1], 2))
  out += [("D conv3", "conv", size // 8, 256, 512, 1), ("D logits", "conv", size // 8 - 1, 512, 1, 1)]
  return out


def median_ms(fn) -> float:
  return 1000 * statistics.median(timings(fn, steps=3, warmup=1))


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--image-size", type=int, default=256)
  p.add_argument("--batch-size", type=int, default=16)
  p.add_argument("--threads", type=int, default=os.cpu_count())
  args = p.parse_args()
  torch.set_num_threads(args.threads)
  rng = np.random.default_rng(0)
  for name, kind, side, cin, cout, stride in specs(args.image_size):
    x = rng.normal(size=(args.batch_size, side, side, cin)).astype(np.float32)
    k = (0.02 * rng.normal(size=(4, 4, cin, cout))).astype(np.float32)
    if kind == "conv":
      forward = lambda x, k, s=stride: layers.conv_general_dilated(
          x, k, (s, s), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"))
      module = torch.nn.Conv2d(cin, cout, 4, stride, 1, bias=False)
    else:
      forward = layers.UpConv(cout, impl="auto").apply
      forward = lambda x, k, f=forward: f({"params": {"kernel": k}}, x)
      module = torch.nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False)
    g = rng.normal(size=jax.eval_shape(forward, x, k).shape).astype(np.float32)
    grads = jax.jit(jax.grad(lambda x, k: jnp.sum(forward(x, k) * g), argnums=(0, 1)))
    xj, kj = jnp.asarray(x), jnp.asarray(k)
    colorjax_ms = median_ms(lambda: jax.block_until_ready(grads(xj, kj)))
    xt = torch.tensor(x).permute(0, 3, 1, 2).contiguous().requires_grad_()
    gt = torch.tensor(g).permute(0, 3, 1, 2).contiguous()

    def torch_step():
      xt.grad = None
      module.zero_grad()
      (module(xt) * gt).sum().backward()

    torch_ms = median_ms(torch_step)
    print(json.dumps({"bench": "layer_fwd_bwd", "layer": name, "input": [args.batch_size, side, side, cin],
                      "cout": cout, "stride": stride, "backend": jax.default_backend(),
                      "colorjax_ms": round(colorjax_ms, 1), "torch_ms": round(torch_ms, 1),
                      "torch_over_colorjax": round(torch_ms / colorjax_ms, 2),
                      "date": datetime.date.today().isoformat(), "command": " ".join(sys.argv),
                      "torch": torch.__version__, "jax": jax.__version__}), flush=True)


if __name__ == "__main__":
  main()
