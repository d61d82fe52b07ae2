"""ImageNet weights for the ResNet encoders, read from PyTorch state dicts in torchvision's layout.

colorjax ships no weights and downloads none: `model.encoder_weights=PATH` names a file you
have, e.g. torchvision's `resnet18-f37072fd.pth` / `resnet34-b627a593.pth`, or the same state
dict saved as `.safetensors` (needs the `safetensors` package) or `.npz` (one array per key).
`.pth` files are read with `torch.load(weights_only=True)` and need PyTorch.

The Flax encoder's module names mirror torchvision's (`layer2_0/downsample_bn` is
`layer2.0.downsample.1`), so the mapping is mechanical: conv kernels OIHW -> HWIO, BatchNorm
weight/bias/running_mean/running_var -> params scale/bias and batch_stats mean/var. The stem
sees one channel (L) instead of RGB; its kernel is the sum of the three RGB kernels, i.e. what
the ImageNet stem computes on a gray image (R = G = B) fed as it is. ImageNet's per-channel
mean/std normalisation is not folded in: L arrives as L/50 - 1 in [-1, 1], about 0.45x the
scale of a normalised gray image and shifted, so the stem's loaded batch-norm statistics fit
only once training has updated them (their momentum is 0.1 a step).
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


def _to_flax(value: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
  """A PyTorch tensor in the layout of the Flax leaf of `shape` (conv OIHW -> HWIO)."""
  if value.ndim == 4:
    if value.shape[1] == 3 and shape[2] == 1:  # RGB stem -> L stem
      value = value.sum(axis=1, keepdims=True)
    value = value.transpose(2, 3, 1, 0)
  return value


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
    value = _to_flax(state[key], leaf.shape)
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
    variables = convert(read_state_dict(path), abstract, torchvision_resnet_name, ignore=("fc.",))
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
