"""torchvision ResNet state dicts load into the Flax encoder and compute the same features."""

import copy
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from colorjax.models import pretrained
from colorjax.models.regressors import ResNetColorizer
from colorjax.models.resnet_unet import ResNetEncoder, ResNetUNet
from test_fid import fast_compiles  # noqa: F401 (an autouse fixture)

torch = pytest.importorskip("torch")
nn = torch.nn


class BasicBlock(nn.Module):
  """torchvision's BasicBlock, attribute names included (they are the state-dict keys)."""

  def __init__(self, cin, cout, stride):
    super().__init__()
    self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(cout)
    self.relu = nn.ReLU()
    self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(cout)
    self.downsample = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                       if stride != 1 or cin != cout else None)

  def forward(self, x):
    y = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
    return self.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNet(nn.Module):
  """torchvision's ResNet-18/34 layout: conv1, bn1, maxpool, layer1..4, fc."""

  def __init__(self, blocks=(2, 2, 2, 2)):
    super().__init__()
    self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
    self.bn1 = nn.BatchNorm2d(64)
    self.relu = nn.ReLU()
    self.maxpool = nn.MaxPool2d(3, 2, 1)
    cin = 64
    for i, n in enumerate(blocks):
      cout = 64 * 2 ** i
      layers = [BasicBlock(cin if j == 0 else cout, cout, 2 if i and j == 0 else 1) for j in range(n)]
      setattr(self, f"layer{i + 1}", nn.Sequential(*layers))
      cin = cout
    self.avgpool = nn.AdaptiveAvgPool2d(1)
    self.fc = nn.Linear(512, 1000)

  def stages(self, x):
    """Stem (before max-pooling) and layer1..layer4 outputs, as the Flax encoder returns them."""
    out = [self.relu(self.bn1(self.conv1(x)))]
    h = self.maxpool(out[0])
    for i in range(1, 5):
      h = getattr(self, f"layer{i}")(h)
      out.append(h)
    return out


@pytest.fixture(scope="module")
def resnet18():
  torch.manual_seed(0)
  model = ResNet()
  for m in model.modules():  # non-trivial statistics, so a swapped mean/var or scale/bias shows
    if isinstance(m, nn.BatchNorm2d):
      m.running_mean.uniform_(-0.5, 0.5)
      m.running_var.uniform_(0.5, 2.0)
      m.weight.data.uniform_(0.5, 1.5)
      m.bias.data.uniform_(-0.5, 0.5)
      m.num_batches_tracked.fill_(7)
  return model.eval()


def _save(model, path):
  state = model.state_dict()
  if path.suffix == ".pth":
    torch.save(state, path)
  elif path.suffix == ".npz":
    np.savez(path, **{k: v.numpy() for k, v in state.items()})
  else:
    safetensors_torch = pytest.importorskip("safetensors.torch")
    safetensors_torch.save_file(state, str(path))
  return path


def _imagenet_input(l):
  """What torchvision's ResNet sees for model input l = L/50 - 1: the gray image of grey level
  L/100, normalised per channel; padded by the stem's 3 px with the mid-grey that Flax's 0s are
  (torchvision would pad with 0, ImageNet's mean colour: the only difference, at the border)."""
  mean, std = pretrained.IMAGENET_MEAN[:, None, None], pretrained.IMAGENET_STD[:, None, None]
  b, h, w, _ = l.shape
  x = np.broadcast_to((0.5 - mean) / std, (b, 3, h + 6, w + 6)).copy()
  x[:, :, 3:-3, 3:-3] = ((l.transpose(0, 3, 1, 2) + 1) / 2 - mean) / std
  return torch.from_numpy(x)


@pytest.mark.parametrize("ext", [".pth", ".npz", ".safetensors"])
def test_every_stage_matches_torchvision_on_the_normalised_gray_image(resnet18, tmp_path, ext):
  params, stats = pretrained.load_torchvision_resnet(_save(resnet18, tmp_path / f"r18{ext}"), 18)
  gray = np.random.default_rng(0).uniform(-1, 1, (2, 64, 64, 1)).astype(np.float32)
  flax_stages = ResNetEncoder(18).apply({"params": params, "batch_stats": stats}, gray, train=False)
  unpadded = copy.deepcopy(resnet18)
  unpadded.conv1.padding = (0, 0)  # _imagenet_input pads
  with torch.no_grad():
    torch_stages = unpadded.stages(_imagenet_input(gray))
  names = ["stem", "layer1", "layer2", "layer3", "layer4"]
  for name, a, b in zip(names, flax_stages, torch_stages, strict=True):
    b = b.numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(np.asarray(a), b, rtol=1e-4, atol=1e-4 * np.abs(b).max(), err_msg=name)


def test_wrong_depth_is_refused_with_a_reason(resnet18, tmp_path):
  path = _save(resnet18, tmp_path / "r18.npz")
  with pytest.raises(ValueError, match="not a torchvision ResNet-34.*missing"):
    pretrained.load_torchvision_resnet(path, 34)
  r34 = _save(ResNet((3, 4, 6, 3)), tmp_path / "r34.npz")
  with pytest.raises(ValueError, match="not a torchvision ResNet-18.*no place for.*layer1.2"):
    pretrained.load_torchvision_resnet(r34, 18)


@pytest.mark.parametrize("ext", [".pth", ".npz", ".safetensors"])
def test_a_damaged_weights_file_is_named_with_its_problem(tmp_path, ext):
  path = tmp_path / f"notes{ext}"
  path.write_text("my notes, not weights\n")
  with pytest.raises(ValueError, match=f"{path} is not a readable \\{ext} state dict \\(\\w+: "):
    pretrained.read_state_dict(path)
  torch.save([torch.zeros(2)], tmp_path / "list.pth")
  with pytest.raises(ValueError, match="holds a list, not a state dict"):
    pretrained.read_state_dict(tmp_path / "list.pth")


@pytest.mark.parametrize("generator", [ResNetUNet(18), ResNetColorizer(18)], ids=["unet", "colorizer"])
def test_merge_replaces_only_the_encoder(resnet18, tmp_path, generator):
  params, stats = pretrained.load_torchvision_resnet(_save(resnet18, tmp_path / "r18.npz"), 18)
  variables = jax.eval_shape(lambda: generator.init(jax.random.key(0), jnp.zeros((1, 32, 32, 1))))
  merged = pretrained.merge_encoder(variables, params, stats)
  assert set(merged["params"]["encoder"]) == set(variables["params"]["encoder"])  # colorizer: 2 stages
  np.testing.assert_array_equal(merged["params"]["encoder"]["conv1"]["kernel"], params["conv1"]["kernel"])
  np.testing.assert_array_equal(merged["batch_stats"]["encoder"]["layer2_0"]["downsample_bn"]["var"],
                                stats["layer2_0"]["downsample_bn"]["var"])
  others = [k for k in variables["params"] if k != "encoder"]
  assert all(merged["params"][k] is variables["params"][k] for k in others)
  with pytest.raises(ValueError, match="resnet_depth"):
    pretrained.merge_encoder(jax.eval_shape(lambda: ResNetUNet(34).init(
        jax.random.key(0), jnp.zeros((1, 32, 32, 1)))), params, stats)
