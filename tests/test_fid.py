"""FID: the Fréchet distance against NumPy on known Gaussians, streamed feature statistics,
a small random network standing in for Inception, and the Flax Inception against PyTorch."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from colorjax import fid


@pytest.fixture(scope="module", autouse=True)
def fast_compiles():
  """Tiny models on CPU: compiling them, not running them, is the cost (as in flax's imagenet test)."""
  before = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", True)
  yield
  jax.config.update("jax_disable_most_optimizations", before)


def _random_spd(rng, d):
  a = rng.normal(size=(d, d))
  return a @ a.T / d + 0.1 * np.eye(d)


def _sqrtm_psd(s):
  w, v = np.linalg.eigh(s)
  return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def _reference_fid(mu1, s1, mu2, s2):
  """Tr((S1 S2)^(1/2)) = Tr((S1^(1/2) S2 S1^(1/2))^(1/2)), which only needs symmetric roots."""
  r1 = _sqrtm_psd(s1)
  return np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(_sqrtm_psd(r1 @ s2 @ r1))


def test_frechet_distance_matches_numpy_on_known_gaussians():
  rng = np.random.default_rng(0)
  for d in (1, 5, 64):
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = _random_spd(rng, d), _random_spd(rng, d)
    assert fid.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(_reference_fid(mu1, s1, mu2, s2), rel=1e-8)
  var1, var2 = rng.uniform(0.5, 2, 8), rng.uniform(0.5, 2, 8)  # diagonal: a closed form per axis
  want = 4.0 * 8 + np.sum((np.sqrt(var1) - np.sqrt(var2)) ** 2)
  assert fid.frechet_distance(np.zeros(8), np.diag(var1), np.full(8, 2.0), np.diag(var2)) == pytest.approx(want)
  assert fid.frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-9)


def test_fewer_images_than_features_give_the_exact_distance():
  """Six images, 64 features (a small held-out set): sqrtm's off-diagonal round-off is large
  (0.6 here), its trace exact, as pytorch-fid, which checks only the diagonal, reports."""
  rng = np.random.default_rng(0)
  w = rng.normal(size=(64, 64))
  stats = [fid.FeatureStats(), fid.FeatureStats()]
  for shift, s in zip((0.0, 0.3), stats):
    s.update(np.maximum((rng.normal(size=(6, 64)) + shift) @ w / 8, 0))
  assert fid.fid(*stats) == pytest.approx(_reference_fid(*stats[0].mean_cov(), *stats[1].mean_cov()), rel=1e-6)


def test_streamed_statistics_equal_numpy_and_converge_to_the_true_distance():
  rng = np.random.default_rng(1)
  d = 4
  mu, sigma = rng.normal(size=d), _random_spd(rng, d)
  samples = rng.multivariate_normal(mu, sigma, size=200_000)
  stats = fid.FeatureStats()
  for chunk in np.array_split(samples, 7):
    stats.update(chunk)
  m, s = stats.mean_cov()
  np.testing.assert_allclose(m, samples.mean(0), rtol=1e-9, atol=1e-12)
  np.testing.assert_allclose(s, np.cov(samples, rowvar=False), rtol=1e-9, atol=1e-12)
  other_mu, other_sigma = mu + 0.5, 2.0 * sigma
  assert fid.frechet_distance(m, s, other_mu, other_sigma) == pytest.approx(
      _reference_fid(mu, sigma, other_mu, other_sigma), rel=0.02)


class TinyFeatures(nn.Module):
  """A random conv net standing in for Inception (same role: uint8 RGB in, a vector out)."""

  @nn.compact
  def __call__(self, rgb_u8):
    x = rgb_u8.astype(jnp.float32) / 127.5 - 1.0
    for width in (8, 16):
      x = nn.relu(nn.Conv(width, (3, 3), strides=2)(x))
    return jnp.concatenate([x.mean(axis=(1, 2)), x.std(axis=(1, 2))], -1)


def tiny_feature_fn(seed: int = 0) -> fid.FeatureFn:
  """uint8 RGB [B, H, W, 3] -> [B, 32] features of a fixed random network."""
  model = TinyFeatures()
  variables = model.init(jax.random.key(seed), jnp.zeros((1, 32, 32, 3), jnp.uint8))
  apply = jax.jit(functools.partial(model.apply, variables))
  return lambda rgb: np.asarray(apply(jnp.asarray(rgb)))


def test_fid_with_a_random_network_orders_degradations():
  rng = np.random.default_rng(2)
  features = tiny_feature_fn()
  y, x = np.mgrid[0:32, 0:32] / 32
  real = np.stack([np.stack([x, y, 1 - x * y], -1) * rng.uniform(0.3, 1, 3) for _ in range(64)])
  real = (real * 255).astype(np.uint8)
  gray = np.repeat(real.mean(-1, keepdims=True), 3, -1).astype(np.uint8)
  slightly_off = np.clip(real.astype(int) + rng.integers(-4, 5, real.shape), 0, 255).astype(np.uint8)
  stats = {}
  for name, images in (("real", real), ("gray", gray), ("off", slightly_off)):
    stats[name] = fid.FeatureStats()
    for batch in np.array_split(images, 4):
      stats[name].update(features(batch))
  assert fid.fid(stats["real"], stats["real"]) == pytest.approx(0.0, abs=1e-6)
  assert 0 < fid.fid(stats["real"], stats["off"]) < fid.fid(stats["real"], stats["gray"])


def test_flax_inception_matches_pytorch_fid_layout_and_forward(tmp_path):
  torch = pytest.importorskip("torch")
  F = torch.nn.functional
  torch.manual_seed(0)
  reference = _torch_fid_inception(torch)
  np.savez(tmp_path / "inception.npz", **{k: v.numpy() for k, v in reference.state_dict().items()})
  features = fid.InceptionFeatures.from_file(tmp_path / "inception.npz")
  rgb = np.random.default_rng(3).integers(0, 256, (2, 64, 48, 3), dtype=np.uint8)
  got = features(rgb)
  with torch.no_grad():
    x = torch.from_numpy(rgb.transpose(0, 3, 1, 2)).float() / 255
    x = 2 * F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False) - 1
    want = reference(x).numpy()
  assert got.shape == (2, 2048)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
  # A deep random network maps every image near one point: check what depends on the input too.
  np.testing.assert_allclose(got[0] - got[1], want[0] - want[1], atol=0.02 * np.abs(want[0] - want[1]).max())


def _torch_fid_inception(torch):
  """pytorch-fid's FID InceptionV3 (torchvision's Inception3 with its patched blocks), with
  torchvision's attribute names and random weights and statistics, written out here because
  torchvision is not installed."""
  nn_, F = torch.nn, torch.nn.functional

  class Conv(nn_.Module):
    def __init__(self, cin, cout, kernel, stride=1, padding=0):
      super().__init__()
      self.conv = nn_.Conv2d(cin, cout, kernel, stride, padding, bias=False)
      self.bn = nn_.BatchNorm2d(cout, eps=0.001)
      with torch.no_grad():  # variance-preserving, so 47 layers deep the output still depends on the input
        nn_.init.kaiming_normal_(self.conv.weight, nonlinearity="relu")
        self.bn.running_mean.uniform_(-0.2, 0.2)
        self.bn.running_var.uniform_(0.5, 2.0)
        self.bn.weight.uniform_(0.5, 1.5)
        self.bn.bias.uniform_(-0.1, 0.1)

    def forward(self, x):
      return F.relu(self.bn(self.conv(x)))

  avg = lambda x: F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)

  class A(nn_.Module):
    def __init__(self, cin, pool):
      super().__init__()
      self.branch1x1 = Conv(cin, 64, 1)
      self.branch5x5_1, self.branch5x5_2 = Conv(cin, 48, 1), Conv(48, 64, 5, padding=2)
      self.branch3x3dbl_1, self.branch3x3dbl_2 = Conv(cin, 64, 1), Conv(64, 96, 3, padding=1)
      self.branch3x3dbl_3, self.branch_pool = Conv(96, 96, 3, padding=1), Conv(cin, pool, 1)

    def forward(self, x):
      return torch.cat([self.branch1x1(x), self.branch5x5_2(self.branch5x5_1(x)),
                        self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                        self.branch_pool(avg(x))], 1)

  class B(nn_.Module):
    def __init__(self, cin):
      super().__init__()
      self.branch3x3 = Conv(cin, 384, 3, stride=2)
      self.branch3x3dbl_1, self.branch3x3dbl_2 = Conv(cin, 64, 1), Conv(64, 96, 3, padding=1)
      self.branch3x3dbl_3 = Conv(96, 96, 3, stride=2)

    def forward(self, x):
      return torch.cat([self.branch3x3(x), self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                        F.max_pool2d(x, 3, 2)], 1)

  class C(nn_.Module):
    def __init__(self, cin, c7):
      super().__init__()
      row, col = dict(kernel=(1, 7), padding=(0, 3)), dict(kernel=(7, 1), padding=(3, 0))
      self.branch1x1 = Conv(cin, 192, 1)
      self.branch7x7_1, self.branch7x7_2, self.branch7x7_3 = Conv(cin, c7, 1), Conv(c7, c7, **row), Conv(c7, 192, **col)
      self.branch7x7dbl_1, self.branch7x7dbl_2 = Conv(cin, c7, 1), Conv(c7, c7, **col)
      self.branch7x7dbl_3, self.branch7x7dbl_4 = Conv(c7, c7, **row), Conv(c7, c7, **col)
      self.branch7x7dbl_5, self.branch_pool = Conv(c7, 192, **row), Conv(cin, 192, 1)

    def forward(self, x):
      b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
      d = self.branch7x7dbl_3(self.branch7x7dbl_2(self.branch7x7dbl_1(x)))
      d = self.branch7x7dbl_5(self.branch7x7dbl_4(d))
      return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(avg(x))], 1)

  class D(nn_.Module):
    def __init__(self, cin):
      super().__init__()
      self.branch3x3_1, self.branch3x3_2 = Conv(cin, 192, 1), Conv(192, 320, 3, stride=2)
      self.branch7x7x3_1, self.branch7x7x3_2 = Conv(cin, 192, 1), Conv(192, 192, (1, 7), padding=(0, 3))
      self.branch7x7x3_3, self.branch7x7x3_4 = Conv(192, 192, (7, 1), padding=(3, 0)), Conv(192, 192, 3, stride=2)

    def forward(self, x):
      b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
      return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), b7, F.max_pool2d(x, 3, 2)], 1)

  class E(nn_.Module):
    def __init__(self, cin, pool):
      super().__init__()
      row, col = dict(kernel=(1, 3), padding=(0, 1)), dict(kernel=(3, 1), padding=(1, 0))
      self.pool = pool
      self.branch1x1, self.branch3x3_1 = Conv(cin, 320, 1), Conv(cin, 384, 1)
      self.branch3x3_2a, self.branch3x3_2b = Conv(384, 384, **row), Conv(384, 384, **col)
      self.branch3x3dbl_1, self.branch3x3dbl_2 = Conv(cin, 448, 1), Conv(448, 384, 3, padding=1)
      self.branch3x3dbl_3a, self.branch3x3dbl_3b = Conv(384, 384, **row), Conv(384, 384, **col)
      self.branch_pool = Conv(cin, 192, 1)

    def forward(self, x):
      b3 = self.branch3x3_1(x)
      d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
      pooled = avg(x) if self.pool == "avg" else F.max_pool2d(x, 3, 1, 1)
      return torch.cat([self.branch1x1(x), torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1),
                        torch.cat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], 1),
                        self.branch_pool(pooled)], 1)

  class Inception(nn_.Module):
    def __init__(self):
      super().__init__()
      self.Conv2d_1a_3x3, self.Conv2d_2a_3x3 = Conv(3, 32, 3, stride=2), Conv(32, 32, 3)
      self.Conv2d_2b_3x3, self.Conv2d_3b_1x1 = Conv(32, 64, 3, padding=1), Conv(64, 80, 1)
      self.Conv2d_4a_3x3 = Conv(80, 192, 3)
      self.Mixed_5b, self.Mixed_5c, self.Mixed_5d = A(192, 32), A(256, 64), A(288, 64)
      self.Mixed_6a = B(288)
      self.Mixed_6b, self.Mixed_6c, self.Mixed_6d, self.Mixed_6e = C(768, 128), C(768, 160), C(768, 160), C(768, 192)
      self.Mixed_7a, self.Mixed_7b, self.Mixed_7c = D(768), E(1280, "avg"), E(2048, "max")
      self.fc = nn_.Linear(2048, 1008)

    def forward(self, x):
      x = F.max_pool2d(self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x))), 3, 2)
      x = F.max_pool2d(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)), 3, 2)
      for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
        x = getattr(self, f"Mixed_{name}")(x)
      return x.mean(dim=(2, 3))

  return Inception().eval()
