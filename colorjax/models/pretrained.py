"""ImageNet weights for the ResNet encoders, read from PyTorch state dicts in torchvision's layout.

colorjax ships no weights and downloads none: `model.encoder_weights=PATH` names a file you
have, e.g. torchvision's `resnet18-f37072fd.pth` / `resnet34-b627a593.pth`, or the same state
dict saved as `.safetensors` (needs the `safetensors` package) or `.npz` (one array per key).
`.pth` files are read with `torch.load(weights_only=True)` and need PyTorch.

The Flax encoder's module names mirror torchvision's (`layer2_0/downsample_bn` is
`layer2.0.downsample.1`), so the mapping is mechanical: conv kernels OIHW -> HWIO, BatchNorm
weight/bias/running_mean/running_var -> params scale/bias and batch_stats mean/var. The stem
sees one channel (L) instead of RGB, so the stem is folded (`fold_gray_input`) to compute on
l = L/50 - 1 what the ImageNet stem computes on the gray image of grey level L/100, normalised
with ImageNet's per-channel mean and std: the loaded batch-norm statistics then fit from the
first step. (L/100 is within 0.035 of the sRGB grey level of lightness L.) Only the stem's
border differs: torchvision pads the normalised image with 0, ImageNet's mean colour, and Flax
pads l with 0, mid-grey.
"""

from __future__ import annotations

import functools
import os
import re
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np

from colorjax.models.resnet_unet import ResNetEncoder

StateDict = dict[str, np.ndarray]
Variables = dict[str, Any]

_LEAF_NAMES = {("params", "kernel"): "weight", ("params", "scale"): "weight",
               ("params", "bias"): "bias", ("batch_stats", "mean"): "running_mean",
               ("batch_stats", "var"): "running_var"}
_UNUSED = ("num_batches_tracked",)  # PyTorch's BatchNorm counter: no Flax counterpart


def read_state_dict(path: str | os.PathLike) -> StateDict:
  """A PyTorch state dict from `.pth`/`.pt`, `.safetensors` or `.npz` as float32 NumPy arrays."""
  path = os.fspath(path)
  if not os.path.exists(path):
    raise FileNotFoundError(f"weights file {path!r} does not exist")
  ext = os.path.splitext(path)[1].lower()
  if ext not in (".pth", ".pt", ".safetensors", ".npz"):
    raise ValueError(f"{path}: unknown weights format {ext!r}; use .pth, .safetensors or .npz")
  try:
    state = _read(path, ext)
  except ImportError:
    raise
  except Exception as e:  # noqa: BLE001 -- pickle, zip, safetensors and npz readers each raise their own
    reason = (str(e).strip().split(". ") or [""])[0]
    raise ValueError(f"{path} is not a readable {ext} state dict ({type(e).__name__}: {reason})") from None
  if not isinstance(state, dict):
    raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict")
  return {k: np.asarray(v, np.float32) for k, v in state.items() if not k.endswith(_UNUSED)}


def _read(path: str, ext: str) -> Any:
  if ext in (".pth", ".pt"):
    try:
      import torch  # only .pth needs PyTorch
    except ImportError:
      raise ImportError(f"reading {path} needs PyTorch (pip install torch); or save the state dict "
                        "as .npz / .safetensors on a machine that has it") from None
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {k: v.float().numpy() for k, v in state.items()} if isinstance(state, dict) else state
  if ext == ".safetensors":
    try:
      from safetensors.numpy import load_file
    except ImportError:
      raise ImportError(f"reading {path} needs safetensors (pip install safetensors)") from None
    return dict(load_file(path))
  with np.load(path) as f:
    return {k: f[k] for k in f.files}


IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def fold_gray_input(state: StateDict, conv: str = "conv1", bn: str = "bn1") -> StateDict:
  """`state` with its RGB stem conv taking l = L/50 - 1 instead of a normalised RGB image.

  The ImageNet stem sees x_c = (g - mean_c) / std_c on a gray image g = (l + 1) / 2, so
  sum_c W_c * x_c = conv(l, sum_c W_c / (2 std_c)) + sum_c W_c * (0.5 - mean_c) / std_c.
  The second term is a constant per output channel, taken off the batch norm's running mean.
  Exact where the kernel sees no padding (at the border, see the module docstring).
  """
  w = state[f"{conv}.weight"]  # [O, 3, kh, kw]
  scaled = w / IMAGENET_STD[None, :, None, None]
  offset = np.einsum("ochw,c->o", scaled, 0.5 - IMAGENET_MEAN)
  return {**state, f"{conv}.weight": scaled.sum(axis=1, keepdims=True) / 2,
          f"{bn}.running_mean": state[f"{bn}.running_mean"] - offset}


def _to_flax(value: np.ndarray) -> np.ndarray:
  """A PyTorch tensor in the layout of a Flax leaf (conv OIHW -> HWIO)."""
  return value.transpose(2, 3, 1, 0) if value.ndim == 4 else value


def convert(state: StateDict, abstract: Variables, module_name: Callable[[str], str] = lambda n: n,
            ignore: tuple[str, ...] = ()) -> Variables:
  """PyTorch `state` -> Flax variables shaped like `abstract` ({"params", "batch_stats"}).

  `module_name` maps a Flax module name to its PyTorch path. Every Flax leaf must be in the
  file with the right shape, and every key of the file must be used except those starting with
  `ignore` (classifier heads): so a ResNet-34 file cannot half-load into a ResNet-18.
  """
  out, used, missing, wrong = {}, set(), [], []
  for path, leaf in flax.traverse_util.flatten_dict(abstract).items():
    collection, *modules, name = path
    key = ".".join([module_name(m) for m in modules] + [_LEAF_NAMES[(collection, name)]])
    used.add(key)
    if key not in state:
      missing.append(key)
      continue
    value = _to_flax(state[key])
    if value.shape != tuple(leaf.shape):
      wrong.append(f"{key}: file {state[key].shape}, model {tuple(leaf.shape)}")
    out[path] = value.astype(leaf.dtype)
  unused = sorted(k for k in state if k not in used and not k.startswith(ignore))
  problems = ([f"missing {len(missing)} tensors, e.g. {missing[:3]}"] if missing else []) + wrong + (
      [f"{len(unused)} tensors the model has no place for, e.g. {unused[:3]}"] if unused else [])
  if problems:
    raise ValueError("weights do not fit the model: " + "; ".join(problems))
  return flax.traverse_util.unflatten_dict(out)


def torchvision_resnet_name(name: str) -> str:
  """Flax encoder module name -> torchvision path: `layer1_0` -> `layer1.0`, `downsample_bn` -> `downsample.1`."""
  name = re.sub(r"^layer(\d+)_(\d+)$", r"layer\1.\2", name)
  return {"downsample_conv": "downsample.0", "downsample_bn": "downsample.1"}.get(name, name)


def load_torchvision_resnet(path: str | os.PathLike, depth: int) -> tuple[Variables, Variables]:
  """A torchvision ResNet-`depth` state dict -> (params, batch_stats) of a 1-channel `ResNetEncoder`."""
  encoder = ResNetEncoder(depth)
  abstract = jax.eval_shape(functools.partial(encoder.init, train=False), jax.random.key(0),
                            jax.ShapeDtypeStruct((1, 64, 64, 1), jnp.float32))
  try:
    state = read_state_dict(path)
    if {"conv1.weight", "bn1.running_mean"} <= set(state) and state["conv1.weight"].shape[1] == 3:  # not folded yet
      state = fold_gray_input(state)
    variables = convert(state, abstract, torchvision_resnet_name, ignore=("fc.",))
  except ValueError as e:
    raise ValueError(f"{os.fspath(path)} is not a torchvision ResNet-{depth} ({e})") from None
  return variables["params"], variables["batch_stats"]


def merge_encoder(variables: Variables, encoder_params: Variables, encoder_stats: Variables) -> Variables:
  """Generator variables with the `encoder` subtree replaced by pretrained weights.

  The generator may use fewer stages than the file holds (`ResNetColorizer` keeps two); those
  it has must all be there with the same shapes. Works on arrays, tracers and shape structs.
  """
  merged = dict(variables)
  for collection, loaded in (("params", encoder_params), ("batch_stats", encoder_stats)):
    current = flax.traverse_util.flatten_dict(variables[collection]["encoder"])
    flat = flax.traverse_util.flatten_dict(loaded)
    new = {}
    for path, leaf in current.items():
      if path not in flat or flat[path].shape != tuple(leaf.shape):
        found = flat[path].shape if path in flat else "nothing"
        raise ValueError(f"pretrained encoder: {collection}/{'/'.join(path)} is {tuple(leaf.shape)} in "
                         f"the model, {found} in the weights (is model.resnet_depth right?)")
      new[path] = jnp.asarray(flat[path], leaf.dtype)
    merged[collection] = {**variables[collection], "encoder": flax.traverse_util.unflatten_dict(new)}
  return merged
