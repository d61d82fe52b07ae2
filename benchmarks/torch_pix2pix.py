#!/usr/bin/env python3
"""PyTorch reference of the official pix2pix *colorization* recipe, for benchmarking colorjax.

What this reproduces
--------------------
junyanz/pytorch-CycleGAN-and-pix2pix, ``--model colorization`` (= pix2pix with
``--input_nc 1 --output_nc 2 --dataset_mode colorization``):

* Data: RGB -> CIE Lab with ``skimage.color.rgb2lab``; input ``A = L/50 - 1`` (1 channel,
  [-1, 1]), target ``B = ab/110`` (2 channels, ~[-1, 1]).
* Generator: ``UnetGenerator(1, 2, num_downs, ngf=64, BatchNorm2d, use_dropout=True)`` built
  from ``UnetSkipConnectionBlock`` exactly as in ``models/networks.py`` (k4 s2 p1 convs,
  LeakyReLU(0.2) down, ReLU up, ConvTranspose2d up, Tanh at the outermost block, bias=False
  on every conv followed by BatchNorm, Dropout(0.5) in the ngf*8 middle blocks).
  ``num_downs`` defaults to log2(image_size) (``unet_256`` uses 8).
  NB: like the official code the activations are *in-place* (``LeakyReLU(0.2, True)``), so the
  tensor concatenated on a skip path is LeakyReLU(x) rather than x; this is mathematically a
  no-op because every concat feeds straight into ReLU, and ReLU(LeakyReLU(x)) == ReLU(x)
  (checked: identical outputs with inplace=False).
* Discriminator: ``NLayerDiscriminator(3, ndf=64, n_layers=3, BatchNorm2d)`` (70x70 PatchGAN)
  on L || ab.
* Init: ``init_weights('normal', 0.02)``: conv weights N(0, 0.02), conv biases 0,
  BatchNorm weight N(1, 0.02), bias 0.
* Step: ``Pix2PixModel.optimize_parameters`` with gan_mode 'vanilla' (BCEWithLogits),
  lambda_L1 = 100, Adam(lr=2e-4, betas=(0.5, 0.999)) for G and D, no image pool:
  fake = G(L);  D: 0.5 * (BCE(D(L, fake.detach()), 0) + BCE(D(L, real), 1));
  G: BCE(D(L, fake), 1) + 100 * L1(fake, real_ab)   (D frozen during the G update).
  Fake and real go through D as two separate batches (separate BatchNorm statistics), as in
  the official code.
* An optional L1-only pretraining phase (G trained with 100 * L1 only; not part of the
  official recipe, used here as a fair baseline / warm start).

Deviations (deliberate, to match colorjax's data pipeline): images are resized so the short
side equals ``--image-size`` (PIL bicubic), then randomly cropped to image_size x image_size
and randomly flipped (official: resize to 286, crop 256). Grayscale and unreadable photos are
skipped. The resized images are cached in RAM once, so the per-step data work is only
crop/flip/rgb2lab.

Train/eval split (identical in colorjax): every *.jpg / *.jpeg file (case-insensitive) found
recursively under a ``--data`` dir goes to eval iff
``int(hashlib.md5(relpath.encode()).hexdigest()[:8], 16) / 2**32 < eval_fraction`` where
``relpath`` is its POSIX path relative to that ``--data`` dir.

Usage
-----
Time one full G+D training step on random data (prints one JSON line)::

    python benchmarks/torch_pix2pix.py step --image-size 256 --batch-size 16 --steps 10 [--threads N]

Train (phase 1: L1 only -> OUT/l1.pt; phase 2: GAN + 100*L1 -> OUT/gan.pt)::

    python benchmarks/torch_pix2pix.py train --data ../shared/data/ade20k --image-size 64 \\
        --batch-size 16 --l1-minutes 15 --gan-minutes 15 --out runs/torch64 --eval-fraction 0.1 --seed 0

Colorize photos with a checkpoint (fully convolutional G on L resized to short side 256, aspect
kept, padded to multiples of 2**num_downs and the padding cropped off; ab upsampled bilinearly to
full resolution and combined with the full-resolution L)::

    python benchmarks/torch_pix2pix.py colorize --checkpoint runs/torch64/l1.pt --out /tmp/col IMG...

Needs: torch (CPU is fine), numpy, pillow, scikit-image. No torchvision.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import json
import math
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

# --------------------------------------------------------------------------------------
# Networks (verbatim structure of models/networks.py of pytorch-CycleGAN-and-pix2pix)
# --------------------------------------------------------------------------------------


class UnetSkipConnectionBlock(nn.Module):
    """U-Net submodule with skip connection: X -> [X, up(sub(down(X)))]."""

    def __init__(self, outer_nc, inner_nc, input_nc=None, submodule=None, outermost=False,
                 innermost=False, norm_layer=nn.BatchNorm2d, use_dropout=False):
        super().__init__()
        self.outermost = outermost
        use_bias = norm_layer == nn.InstanceNorm2d  # False for BatchNorm
        if input_nc is None:
            input_nc = outer_nc
        downconv = nn.Conv2d(input_nc, inner_nc, kernel_size=4, stride=2, padding=1, bias=use_bias)
        downrelu = nn.LeakyReLU(0.2, True)
        downnorm = norm_layer(inner_nc)
        uprelu = nn.ReLU(True)
        upnorm = norm_layer(outer_nc)

        if outermost:
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1)
            model = [downconv, submodule, uprelu, upconv, nn.Tanh()]
        elif innermost:
            upconv = nn.ConvTranspose2d(inner_nc, outer_nc, kernel_size=4, stride=2, padding=1,
                                        bias=use_bias)
            model = [downrelu, downconv, uprelu, upconv, upnorm]
        else:
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1,
                                        bias=use_bias)
            model = [downrelu, downconv, downnorm, submodule, uprelu, upconv, upnorm]
            if use_dropout:
                model += [nn.Dropout(0.5)]
        self.model = nn.Sequential(*model)

    def forward(self, x):
        if self.outermost:
            return self.model(x)
        # As in the official code; the in-place LeakyReLU turns x into LeakyReLU(x) before the
        # concat, which is harmless since the concat is always followed by ReLU.
        return torch.cat([x, self.model(x)], 1)


class UnetGenerator(nn.Module):
    """pix2pix U-Net generator (unet_256 == num_downs 8)."""

    def __init__(self, input_nc=1, output_nc=2, num_downs=8, ngf=64, norm_layer=nn.BatchNorm2d,
                 use_dropout=True):
        super().__init__()
        if num_downs < 5:
            raise ValueError(f"num_downs must be >= 5, got {num_downs}")
        block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, submodule=None, norm_layer=norm_layer,
                                        innermost=True)
        for _ in range(num_downs - 5):
            block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, submodule=block, norm_layer=norm_layer,
                                            use_dropout=use_dropout)
        block = UnetSkipConnectionBlock(ngf * 4, ngf * 8, submodule=block, norm_layer=norm_layer)
        block = UnetSkipConnectionBlock(ngf * 2, ngf * 4, submodule=block, norm_layer=norm_layer)
        block = UnetSkipConnectionBlock(ngf, ngf * 2, submodule=block, norm_layer=norm_layer)
        self.model = UnetSkipConnectionBlock(output_nc, ngf, input_nc=input_nc, submodule=block,
                                             outermost=True, norm_layer=norm_layer)

    def forward(self, x):
        return self.model(x)


class NLayerDiscriminator(nn.Module):
    """PatchGAN discriminator (n_layers=3: 70x70 receptive field)."""

    def __init__(self, input_nc=3, ndf=64, n_layers=3, norm_layer=nn.BatchNorm2d):
        super().__init__()
        use_bias = norm_layer == nn.InstanceNorm2d
        kw, padw = 4, 1
        seq = [nn.Conv2d(input_nc, ndf, kernel_size=kw, stride=2, padding=padw),
               nn.LeakyReLU(0.2, True)]
        nf_mult = 1
        for n in range(1, n_layers):
            nf_mult_prev, nf_mult = nf_mult, min(2 ** n, 8)
            seq += [nn.Conv2d(ndf * nf_mult_prev, ndf * nf_mult, kernel_size=kw, stride=2,
                              padding=padw, bias=use_bias),
                    norm_layer(ndf * nf_mult), nn.LeakyReLU(0.2, True)]
        nf_mult_prev, nf_mult = nf_mult, min(2 ** n_layers, 8)
        seq += [nn.Conv2d(ndf * nf_mult_prev, ndf * nf_mult, kernel_size=kw, stride=1,
                          padding=padw, bias=use_bias),
                norm_layer(ndf * nf_mult), nn.LeakyReLU(0.2, True)]
        seq += [nn.Conv2d(ndf * nf_mult, 1, kernel_size=kw, stride=1, padding=padw)]
        self.model = nn.Sequential(*seq)

    def forward(self, x):
        return self.model(x)


def init_weights(net, init_gain=0.02):
    """init_weights(net, 'normal', 0.02) of the official repo."""

    def init_func(m):
        classname = m.__class__.__name__
        if hasattr(m, "weight") and (classname.find("Conv") != -1 or classname.find("Linear") != -1):
            nn.init.normal_(m.weight.data, 0.0, init_gain)
            if getattr(m, "bias", None) is not None:
                nn.init.constant_(m.bias.data, 0.0)
        elif classname.find("BatchNorm2d") != -1:
            nn.init.normal_(m.weight.data, 1.0, init_gain)
            nn.init.constant_(m.bias.data, 0.0)

    net.apply(init_func)
    return net


def n_params(net):
    return sum(p.numel() for p in net.parameters())


def default_num_downs(image_size):
    nd = int(round(math.log2(image_size)))
    if 2 ** nd != image_size:
        raise ValueError(f"image_size must be a power of two (got {image_size}); pass --num-downs")
    return nd


def set_requires_grad(net, flag):
    for p in net.parameters():
        p.requires_grad = flag


# --------------------------------------------------------------------------------------
# pix2pix training step
# --------------------------------------------------------------------------------------


class Pix2Pix:
    """G, D, their Adam optimizers, and optimize_parameters() of Pix2PixModel."""

    def __init__(self, num_downs, device, lr=2e-4, beta1=0.5, lambda_l1=100.0):
        self.device = device
        self.num_downs = num_downs
        self.G = init_weights(UnetGenerator(1, 2, num_downs, 64, nn.BatchNorm2d, True)).to(device)
        self.D = init_weights(NLayerDiscriminator(3, 64, 3, nn.BatchNorm2d)).to(device)
        self.opt_G = torch.optim.Adam(self.G.parameters(), lr=lr, betas=(beta1, 0.999))
        self.opt_D = torch.optim.Adam(self.D.parameters(), lr=lr, betas=(beta1, 0.999))
        self.gan_loss = nn.BCEWithLogitsLoss()
        self.l1 = nn.L1Loss()
        self.lambda_l1 = lambda_l1

    def _gan(self, pred, target_is_real):
        target = torch.ones_like(pred) if target_is_real else torch.zeros_like(pred)
        return self.gan_loss(pred, target)

    def step_gan(self, L, ab):
        """One full pix2pix step (D update then G update). Returns float losses."""
        self.G.train(); self.D.train()
        fake = self.G(L)
        # --- D
        set_requires_grad(self.D, True)
        self.opt_D.zero_grad()
        loss_D_fake = self._gan(self.D(torch.cat((L, fake), 1).detach()), False)
        loss_D_real = self._gan(self.D(torch.cat((L, ab), 1)), True)
        loss_D = (loss_D_fake + loss_D_real) * 0.5
        loss_D.backward()
        self.opt_D.step()
        # --- G
        set_requires_grad(self.D, False)
        self.opt_G.zero_grad()
        loss_G_GAN = self._gan(self.D(torch.cat((L, fake), 1)), True)
        loss_G_L1 = self.l1(fake, ab) * self.lambda_l1
        loss_G = loss_G_GAN + loss_G_L1
        loss_G.backward()
        self.opt_G.step()
        return {"G_GAN": loss_G_GAN.item(), "G_L1": loss_G_L1.item(),
                "D_real": loss_D_real.item(), "D_fake": loss_D_fake.item()}

    def step_l1(self, L, ab):
        """G-only step with lambda_L1 * L1 (pretraining phase)."""
        self.G.train()
        self.opt_G.zero_grad()
        loss = self.l1(self.G(L), ab) * self.lambda_l1
        loss.backward()
        self.opt_G.step()
        return {"G_L1": loss.item()}

    def state_dict(self):
        return {"G": self.G.state_dict(), "D": self.D.state_dict(),
                "opt_G": self.opt_G.state_dict(), "opt_D": self.opt_D.state_dict(),
                "num_downs": self.num_downs}

    def load_state_dict(self, sd):
        self.G.load_state_dict(sd["G"]); self.D.load_state_dict(sd["D"])
        self.opt_G.load_state_dict(sd["opt_G"]); self.opt_D.load_state_dict(sd["opt_D"])


def pick_device(name):
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


# --------------------------------------------------------------------------------------
# step: timing
# --------------------------------------------------------------------------------------


def cmd_step(args):
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = pick_device(args.device)
    nd = args.num_downs or default_num_downs(args.image_size)
    model = Pix2Pix(nd, device)
    B, S = args.batch_size, args.image_size
    L = (torch.rand(B, 1, S, S) * 2 - 1).to(device)
    ab = (torch.rand(B, 2, S, S) - 0.5).to(device)
    # --autocast-bf16: PyTorch's own mixed precision (bfloat16 convolutions through oneDNN,
    # AMX where the CPU has it), the fair partner of colorjax's bfloat16 on such a CPU.
    precision = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if args.autocast_bf16 \
        else contextlib.nullcontext
    for _ in range(args.warmup):
        with precision():
            model.step_gan(L, ab)
    sync(device)
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        with precision():
            model.step_gan(L, ab)  # .item() calls inside already synchronise
        sync(device)
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    out = {"bench": "step", "framework": "torch", "torch": torch.__version__, "device": str(device),
           "date": datetime.datetime.now().isoformat(timespec="seconds"), "host": platform.node(),
           "cpu_count": os.cpu_count(), "command": " ".join(["benchmarks/torch_pix2pix.py"] + sys.argv[1:]),
           "threads": torch.get_num_threads(), "image_size": S, "batch_size": B,
           "autocast": "bfloat16" if args.autocast_bf16 else None,
           "num_downs": nd, "g_params": n_params(model.G), "d_params": n_params(model.D),
           "steps": len(times), "median_step_s": round(med, 4), "min_step_s": round(min(times), 4),
           "max_step_s": round(max(times), 4), "img_per_s": round(B / med, 2)}
    print(json.dumps(out), flush=True)


# --------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------

GRAY_MODES = {"L", "LA", "1", "I", "I;16"}
JPEG_EXTS = {".jpg", ".jpeg"}


def is_eval(relpath, eval_fraction):
    return int(hashlib.md5(relpath.encode()).hexdigest()[:8], 16) / 2 ** 32 < eval_fraction


def load_color_rgb(path):
    """PIL RGB image, or None if unreadable or grayscale."""
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in GRAY_MODES:
                return None
            rgb = im.convert("RGB")
    except Exception:  # unreadable / truncated
        return None
    a = np.asarray(rgb, dtype=np.int16)
    r, g, b = a[..., 0], a[..., 1], a[..., 2]
    sat = np.maximum(np.maximum(np.abs(r - g), np.abs(g - b)), np.abs(r - b))
    if np.percentile(sat, 99) < 12:
        return None
    return rgb


def resize_short(im, short):
    w, h = im.size
    s = short / min(w, h)
    nw, nh = max(short, round(w * s)), max(short, round(h * s))
    return im.resize((nw, nh), Image.BICUBIC)


def scan(data_dirs, eval_fraction, image_size, log=print):
    """Returns (train_arrays, eval_arrays, info). Arrays: uint8 HxWx3, short side = image_size."""
    train, evals, skipped = [], [], []
    eval_names = []
    for d in data_dirs:
        root = Path(d)
        files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in JPEG_EXTS)
        for p in files:
            rel = p.relative_to(root).as_posix()
            rgb = load_color_rgb(p)
            if rgb is None:
                skipped.append(f"{d}:{rel}")
                continue
            arr = np.asarray(resize_short(rgb, image_size), dtype=np.uint8)
            if is_eval(rel, eval_fraction):
                evals.append(arr); eval_names.append(f"{d}:{rel}")
            else:
                train.append(arr)
    info = {"n_train": len(train), "n_eval": len(evals), "n_skipped": len(skipped),
            "skipped": skipped, "eval_files": eval_names}
    log(f"data: {len(train)} train, {len(evals)} eval, {len(skipped)} skipped (gray/unreadable)")
    return train, evals, info


def rgb_to_LA(rgb_uint8):
    """uint8 HxWx3 -> (L in [-1,1] 1xHxW, ab/110 2xHxW) float32 tensors."""
    from skimage.color import rgb2lab

    lab = rgb2lab(rgb_uint8).astype(np.float32)
    L = torch.from_numpy(lab[..., 0] / 50.0 - 1.0)[None]
    ab = torch.from_numpy(np.ascontiguousarray(lab[..., 1:].transpose(2, 0, 1)) / 110.0)
    return L, ab


class TrainSet(torch.utils.data.Dataset):
    """Random crop image_size x image_size + random horizontal flip of cached images."""

    def __init__(self, arrays, image_size):
        self.arrays, self.size = arrays, image_size

    def __len__(self):
        return len(self.arrays)

    def __getitem__(self, i):
        a = self.arrays[i]
        h, w = a.shape[:2]
        s = self.size
        y = int(torch.randint(0, h - s + 1, ()).item())
        x = int(torch.randint(0, w - s + 1, ()).item())
        a = a[y:y + s, x:x + s]
        if torch.rand(()).item() < 0.5:
            a = a[:, ::-1]
        return rgb_to_LA(np.ascontiguousarray(a))


def center_crop(a, s):
    h, w = a.shape[:2]
    y, x = (h - s) // 2, (w - s) // 2
    return a[y:y + s, x:x + s]


@torch.no_grad()
def evaluate(G, eval_arrays, image_size, device, batch_size=16):
    """G.eval() on center crops of the eval set. Returns mean |ab error| (Lab units) and
    PSNR (dB) of the reconstructed sRGB against the original crop."""
    from skimage.color import lab2rgb

    if not eval_arrays:
        return {}
    G.eval()
    ab_err, psnrs = [], []
    for i in range(0, len(eval_arrays), batch_size):
        crops = [np.ascontiguousarray(center_crop(a, image_size)) for a in eval_arrays[i:i + batch_size]]
        Ls, abs_ = zip(*(rgb_to_LA(c) for c in crops))
        L, ab = torch.stack(Ls).to(device), torch.stack(abs_).to(device)
        pred = G(L)
        ab_err.append(((pred - ab).abs().mean(dim=(1, 2, 3)) * 110).cpu())
        for k, c in enumerate(crops):
            lab = np.concatenate([(L[k, 0].cpu().numpy()[..., None] + 1) * 50,
                                  pred[k].cpu().numpy().transpose(1, 2, 0) * 110], -1)
            rgb = np.clip(lab2rgb(lab.astype(np.float64)), 0, 1)
            mse = np.mean((rgb - c / 255.0) ** 2)
            psnrs.append(10 * math.log10(1.0 / max(mse, 1e-10)))
    G.train()
    return {"eval_ab_l1": round(float(torch.cat(ab_err).mean()), 4),
            "eval_psnr": round(float(np.mean(psnrs)), 3), "n_eval": len(eval_arrays)}


# --------------------------------------------------------------------------------------
# train
# --------------------------------------------------------------------------------------


def infinite(loader):
    while True:
        yield from loader


def run_phase(name, model, batches, minutes, log_every, device, step_fn):
    t_start = time.perf_counter()
    t_log, n_log, step = t_start, 0, 0
    sums: dict[str, float] = {}
    deadline = t_start + minutes * 60
    while time.perf_counter() < deadline:
        L, ab = next(batches)
        L, ab = L.to(device, non_blocking=True), ab.to(device, non_blocking=True)
        losses = step_fn(L, ab)
        step += 1
        n_log += L.shape[0]
        for k, v in losses.items():
            sums[k] = sums.get(k, 0.0) + v
        now = time.perf_counter()
        if now - t_log >= log_every:
            nsteps = max(1, round(n_log / L.shape[0]))
            msg = " ".join(f"{k}={v / nsteps:.4f}" for k, v in sums.items())
            print(f"[{name}] step {step} t={now - t_start:.0f}s {msg} img/s={n_log / (now - t_log):.2f}",
                  flush=True)
            t_log, n_log, sums = now, 0, {}
    elapsed = time.perf_counter() - t_start
    return {"steps": step, "seconds": round(elapsed, 1)}


def cmd_train(args):
    if args.threads:
        torch.set_num_threads(args.threads)
    random.seed(args.seed); np.random.seed(args.seed); torch.manual_seed(args.seed)
    device = pick_device(args.device)
    out = Path(args.out); out.mkdir(parents=True, exist_ok=True)
    nd = args.num_downs or default_num_downs(args.image_size)
    t0 = time.perf_counter()
    train, evals, info = scan(args.data, args.eval_fraction, args.image_size)
    print(f"scan took {time.perf_counter() - t0:.1f}s", flush=True)
    if len(train) < args.batch_size:
        sys.exit(f"only {len(train)} training images")
    (out / "split.json").write_text(json.dumps({"data": args.data, "eval_fraction": args.eval_fraction,
                                                **info}, indent=1))
    gen = torch.Generator(); gen.manual_seed(args.seed)
    loader = torch.utils.data.DataLoader(
        TrainSet(train, args.image_size), batch_size=args.batch_size, shuffle=True, drop_last=True,
        num_workers=args.workers, generator=gen, persistent_workers=args.workers > 0,
        pin_memory=device.type == "cuda")
    batches = infinite(loader)

    model = Pix2Pix(nd, device)
    if args.init:
        model.load_state_dict(torch.load(args.init, map_location=device))
        print(f"initialised from {args.init}", flush=True)
    print(f"G {n_params(model.G):,} params, D {n_params(model.D):,} params, num_downs={nd}, "
          f"threads={torch.get_num_threads()}, device={device}, workers={args.workers}", flush=True)
    meta = {"image_size": args.image_size, "batch_size": args.batch_size, "num_downs": nd,
            "seed": args.seed, "torch": str(torch.__version__)}
    results = {}
    for phase, minutes, fn, fname in (("l1", args.l1_minutes, model.step_l1, "l1.pt"),
                                      ("gan", args.gan_minutes, model.step_gan, "gan.pt")):
        if minutes <= 0:
            continue
        r = run_phase(phase, model, batches, minutes, args.log_every, device, fn)
        r.update(evaluate(model.G, evals, args.image_size, device))
        results[phase] = r
        torch.save({**model.state_dict(), "meta": {**meta, "phase": phase, **r}}, out / fname)
        print(f"[{phase}] done: {json.dumps(r)} -> {out / fname}", flush=True)
    (out / "results.json").write_text(json.dumps({**meta, **results}, indent=1))


# --------------------------------------------------------------------------------------
# colorize
# --------------------------------------------------------------------------------------


@torch.no_grad()
def cmd_colorize(args):
    from skimage.color import lab2rgb, rgb2lab

    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    ckpt = torch.load(args.checkpoint, map_location=device)
    nd = ckpt["num_downs"]
    G = UnetGenerator(1, 2, nd, 64, nn.BatchNorm2d, True).to(device)
    G.load_state_dict(ckpt["G"])
    G.eval()  # BatchNorm running stats, dropout off
    m = 2 ** nd
    out = Path(args.out); out.mkdir(parents=True, exist_ok=True)
    for path in args.images:
        im = Image.open(path).convert("RGB")
        W, H = im.size
        s = args.short_side / min(W, H)
        w, h = max(1, round(W * s)), max(1, round(H * s))  # aspect kept: no squashed shapes
        small = np.asarray(im.resize((w, h), Image.BICUBIC))
        L_small = torch.from_numpy(rgb2lab(small)[..., 0].astype(np.float32) / 50.0 - 1.0)
        # Reflect-padded on both sides to a multiple of 2^num_downs, the padding cropped off after.
        ph, pw = -h % m, -w % m
        # reflect needs pads shorter than the side: a short side far under 2^num_downs replicates
        mode = "reflect" if max(pw - pw // 2, ph - ph // 2) < min(h, w) else "replicate"
        padded = F.pad(L_small[None, None], (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), mode=mode)
        ab = G(padded.to(device))[..., ph // 2:ph // 2 + h, pw // 2:pw // 2 + w]  # 1x2xhxw, /110 units
        ab = F.interpolate(ab, size=(H, W), mode="bilinear", align_corners=False)[0]
        L_full = rgb2lab(np.asarray(im))[..., 0]
        lab = np.concatenate([L_full[..., None], ab.cpu().numpy().transpose(1, 2, 0) * 110.0], -1)
        rgb = np.clip(lab2rgb(lab), 0, 1)
        dst = out / (Path(path).stem + ".png")
        Image.fromarray((rgb * 255 + 0.5).astype(np.uint8)).save(dst)
        print(f"{path} -> {dst} (model input {w}x{h}, padded to {w + pw}x{h + ph})", flush=True)


# --------------------------------------------------------------------------------------


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)

    def common(sp):
        sp.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: default)")
        sp.add_argument("--device", default="auto", help="auto | cpu | cuda")

    s = sub.add_parser("step", help="time one full G+D training step on random data")
    s.add_argument("--image-size", type=int, default=256)
    s.add_argument("--batch-size", type=int, default=16)
    s.add_argument("--num-downs", type=int, default=0, help="0: log2(image_size)")
    s.add_argument("--steps", type=int, default=10)
    s.add_argument("--warmup", type=int, default=2)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--autocast-bf16", action="store_true", help="run the step under torch.autocast(bfloat16)")
    common(s)

    t = sub.add_parser("train", help="L1 pretraining then pix2pix GAN training on JPEG folders")
    t.add_argument("--data", action="append", required=True, help="folder of photos (repeatable)")
    t.add_argument("--image-size", type=int, default=64)
    t.add_argument("--batch-size", type=int, default=16)
    t.add_argument("--num-downs", type=int, default=0, help="0: log2(image_size)")
    t.add_argument("--l1-minutes", type=float, default=15.0)
    t.add_argument("--gan-minutes", type=float, default=15.0)
    t.add_argument("--out", required=True)
    t.add_argument("--eval-fraction", type=float, default=0.1)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--workers", type=int, default=1, help="DataLoader worker processes")
    t.add_argument("--log-every", type=float, default=30.0, help="seconds between progress lines")
    t.add_argument("--init", default="", help="start from this checkpoint (e.g. OUT/l1.pt)")
    common(t)

    c = sub.add_parser("colorize", help="colorize photos with a checkpoint, write PNGs")
    c.add_argument("--checkpoint", required=True)
    c.add_argument("--out", required=True)
    c.add_argument("--image-size", type=int, default=0,
                   help="ignored (kept for CLI symmetry): G is fully convolutional")
    c.add_argument("--short-side", type=int, default=256, help="model input short side")
    c.add_argument("images", nargs="+")
    common(c)

    args = p.parse_args(argv)
    {"step": cmd_step, "train": cmd_train, "colorize": cmd_colorize}[args.cmd](args)


if __name__ == "__main__":
    main()
