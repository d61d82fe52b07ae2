#!/usr/bin/env python3
"""The pix2pix step's convolutions one by one, colorjax beside PyTorch (forward + both gradients).

    python benchmarks/layers_vs_torch.py [--image-size 256] [--batch-size 16] [--bfloat16]

One JSON line per layer of the pix2pix U-Net (num_downs = log2(size)) and the 70x70 PatchGAN:
milliseconds for the output, the input gradient and the kernel gradient, each as colorjax
computes it on this backend (`colorjax.models.layers`) and as PyTorch's `Conv2d` /
`ConvTranspose2d` do. Where the whole step is slower than the sum of its layers, the time goes
elsewhere (`python -m colorjax.bench step --profile 2` shows where). `--bfloat16` adds, per
layer, colorjax's bfloat16 CPU path forced on (`layers.bf16_conv`, whatever the layer's width)
and PyTorch under `torch.autocast(bfloat16)`: what `layers.BF16_MIN_FEATURES` is chosen from.
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
  p.add_argument("--bfloat16", action="store_true", help="also time both libraries' bfloat16 paths")
  args = p.parse_args()
  torch.set_num_threads(args.threads)
  rng = np.random.default_rng(0)
  for name, kind, side, cin, cout, stride in specs(args.image_size):
    x = rng.normal(size=(args.batch_size, side, side, cin)).astype(np.float32)
    k = (0.02 * rng.normal(size=(4, 4, cin, cout))).astype(np.float32)
    def colorjax_forward(dtype):
      if kind == "conv":
        return lambda x, k, s=stride: layers.conv_general_dilated(
            x, k, (s, s), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"),
            precision=layers.conv_dtype(dtype).get("precision"))
      up = layers.UpConv(cout, impl="auto", dtype=dtype).apply
      return lambda x, k: up({"params": {"kernel": k}}, x)

    if kind == "conv":
      module = torch.nn.Conv2d(cin, cout, 4, stride, 1, bias=False)
    else:
      module = torch.nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False)
    g = rng.normal(size=jax.eval_shape(colorjax_forward(jnp.float32), x, k).shape).astype(np.float32)
    xj, kj = jnp.asarray(x), jnp.asarray(k)

    def colorjax_ms(dtype):
      forward = colorjax_forward(dtype)
      grads = jax.jit(jax.grad(lambda x, k: jnp.sum(forward(x, k) * g), argnums=(0, 1)))
      return median_ms(lambda: jax.block_until_ready(grads(xj, kj)))

    xt = torch.tensor(x).permute(0, 3, 1, 2).contiguous().requires_grad_()
    gt = torch.tensor(g).permute(0, 3, 1, 2).contiguous()

    def torch_ms(autocast):
      def step():
        xt.grad = None
        module.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
          y = module(xt)
        (y.float() * gt).sum().backward()
      return median_ms(step)

    line = {"bench": "layer_fwd_bwd", "layer": name, "input": [args.batch_size, side, side, cin],
            "cout": cout, "stride": stride, "backend": jax.default_backend(),
            "colorjax_ms": round(colorjax_ms(jnp.float32), 1), "torch_ms": round(torch_ms(False), 1)}
    line["torch_over_colorjax"] = round(line["torch_ms"] / line["colorjax_ms"], 2)
    if args.bfloat16:
      threshold, layers.BF16_MIN_FEATURES = layers.BF16_MIN_FEATURES, 0
      try:
        line["colorjax_bf16_ms"] = round(colorjax_ms(jnp.bfloat16), 1)
      finally:
        layers.BF16_MIN_FEATURES = threshold
      line["torch_autocast_bf16_ms"] = round(torch_ms(True), 1)
    line.update({"date": datetime.date.today().isoformat(), "command": " ".join(sys.argv),
                 "torch": torch.__version__, "jax": jax.__version__})
    print(json.dumps(line), flush=True)


if __name__ == "__main__":
  main()
