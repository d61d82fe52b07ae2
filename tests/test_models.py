"""Model shapes, sizes and the upsampling / convolution rewrites against independent references."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from colorjax import config as config_lib
from colorjax import ab_bins, host, models
from colorjax.models import layers
from colorjax.models.pix2pix import PatchGAN, UNetGenerator


def _numpy_conv_transpose(x, k):
  """PyTorch ConvTranspose2d(k=4, s=2, p=1) by its definition: out[2i+p-1] += x[i] * k[p]."""
  b, h, w, _ = x.shape
  out = np.zeros((b, 2 * h, 2 * w, k.shape[-1]))
  for i in range(h):
    for j in range(w):
      for p in range(4):
        for q in range(4):
          oh, ow = 2 * i + p - 1, 2 * j + q - 1
          if 0 <= oh < 2 * h and 0 <= ow < 2 * w:
            out[:, oh, ow] += x[:, i, j] @ k[p, q]
  return out


@pytest.mark.parametrize("impl", ["subpixel", "transpose", "col2im"])
def test_upconv_matches_transposed_convolution_definition(impl):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 5, 7, 3)).astype(np.float32)
  k = rng.normal(size=(4, 4, 3, 4)).astype(np.float32)
  y = layers.UpConv(4, impl=impl).apply({"params": {"kernel": k}}, x)
  np.testing.assert_allclose(y, _numpy_conv_transpose(x, k), atol=1e-4)


def test_upconv_matches_pytorch_conv_transpose2d():
  torch = pytest.importorskip("torch")
  rng = np.random.default_rng(1)
  x = rng.normal(size=(2, 6, 5, 8)).astype(np.float32)
  tconv = torch.nn.ConvTranspose2d(8, 3, 4, 2, 1, bias=True)
  want = tconv(torch.from_numpy(x).permute(0, 3, 1, 2)).detach().permute(0, 2, 3, 1).numpy()
  params = {"kernel": tconv.weight.detach().numpy().transpose(2, 3, 0, 1),  # [Cin,Cout,kh,kw] -> HWIO
            "bias": tconv.bias.detach().numpy()}
  got = layers.UpConv(3, use_bias=True).apply({"params": params}, x)
  np.testing.assert_allclose(got, want, atol=1e-5)


def test_subpixel_and_transpose_give_equal_gradients():
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.normal(size=(2, 4, 4, 6)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(4, 4, 6, 5)), jnp.float32)
  target = jnp.asarray(rng.normal(size=(2, 8, 8, 5)), jnp.float32)

  def grads(impl):
    loss = lambda x, k: jnp.sum((layers.UpConv(5, impl=impl).apply({"params": {"kernel": k}}, x) - target) ** 2)
    return jax.grad(loss, argnums=(0, 1))(x, k)

  for a, b in zip(grads("subpixel"), grads("transpose")):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shape,kernel,stride,pad", [
    ((2, 2, 2, 16), 3, 1, 1), ((2, 4, 4, 8), 4, 2, 1), ((2, 3, 5, 8), 4, 1, 1), ((2, 6, 6, 4), 1, 2, 0),
    ((2, 9, 7, 4), 2, 1, 0), ((2, 10, 9, 3), 4, 3, 1), ((2, 9, 7, 2), 3, 2, 2)])
def test_im2col_convolution_equals_lax(shape, kernel, stride, pad):
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.normal(size=shape), jnp.float32)
  k = jnp.asarray(rng.normal(size=(kernel, kernel, shape[-1], 5)), jnp.float32)
  padding = ((pad, pad), (pad, pad))
  want = jax.lax.conv_general_dilated(x, k, (stride, stride), padding,
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))
  got = layers._im2col_conv(x, k, (stride, stride), padding)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_strided_downsampling_conv_takes_im2col_with_lax_gradients(monkeypatch):
  """The U-Net's 4x4 stride-2 convs at 64+ channels and 32x32+ outputs go through im2col on CPU."""
  rng = np.random.default_rng(4)
  x = jnp.asarray(rng.normal(size=(1, 64, 64, 64)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(4, 4, 64, 8)) * 0.05, jnp.float32)
  padding = ((1, 1), (1, 1))
  calls = []
  im2col = layers._im2col_conv
  monkeypatch.setattr(layers, "_im2col_conv", lambda *a: calls.append(1) or im2col(*a))

  def grads(conv):
    return jax.grad(lambda x, k: jnp.sum(jnp.sin(conv(x, k, (2, 2), padding))), argnums=(0, 1))(x, k)

  want = grads(lambda x, k, s, p: jax.lax.conv_general_dilated(
      x, k, s, p, dimension_numbers=("NHWC", "HWIO", "NHWC")))
  got = grads(lambda x, k, s, p: layers.conv_general_dilated(
      x, k, s, p, dimension_numbers=("NHWC", "HWIO", "NHWC")))
  assert calls
  for a, b in zip(got, want):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def _bf16_exact(rng, shape):
  """Random float32 values that bfloat16 holds exactly, so rounding them changes nothing."""
  return jnp.asarray(rng.normal(size=shape), jnp.float32).astype(jnp.bfloat16).astype(jnp.float32)


@pytest.fixture
def bf16_paths(monkeypatch):
  """Sends every channel count down the bfloat16 CPU paths (in the models only convolutions
  with `BF16_MIN_FEATURES`+ outputs take them) and records which of the two were taken."""
  monkeypatch.setattr(layers, "BF16_MIN_FEATURES", 1)
  taken = set()
  for name in ("bf16_conv", "_patch_matmul"):
    def spy(*args, _name=name, _fn=getattr(layers, name)):
      taken.add(_name)
      return _fn(*args)
    monkeypatch.setattr(layers, name, spy)
  return taken


# Large-M shapes take bf16_conv's custom gradients (4x4 stride 2 through the sub-pixel input
# gradient, the rest through the dilated one); small-M shapes (fewer output pixels than
# kernel rows) differentiate the patch matmul.
@pytest.mark.parametrize("shape,kernel,stride,pad", [
    ((2, 8, 8, 3), 4, 2, 1), ((2, 9, 7, 3), 4, 1, 1), ((2, 8, 6, 4), 2, 1, 1), ((2, 9, 9, 3), 3, 2, 1),
    ((2, 7, 8, 3), 1, 2, 0), ((2, 8, 8, 1), 7, 2, 3), ((2, 7, 7, 3), 4, 2, 1), ((2, 2, 2, 16), 4, 2, 1),
    ((1, 3, 3, 32), 3, 1, 1), ((2, 10, 9, 3), 4, 3, 1)])
def test_bfloat16_convolution_equals_lax_on_bfloat16_operands(bf16_paths, shape, kernel, stride, pad):
  """`precision="bfloat16"` on CPU rounds operands (and the output gradient) to bfloat16 and
  accumulates in float32: on values bfloat16 holds exactly it is lax's float32 convolution."""
  rng = np.random.default_rng(5)
  x = _bf16_exact(rng, shape)
  k = _bf16_exact(rng, (kernel, kernel, shape[-1], 5))
  padding, strides = ((pad, pad), (pad, pad)), (stride, stride)
  lax_conv = lambda x, k: jax.lax.conv_general_dilated(x, k, strides, padding,
                                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))
  bf16_conv = lambda x, k: layers.conv_general_dilated(
      x, k, strides, padding, dimension_numbers=("NHWC", "HWIO", "NHWC"), precision="bfloat16")
  want, want_vjp = jax.vjp(lax_conv, x, k)
  got, got_vjp = jax.vjp(jax.jit(bf16_conv), x, k)
  g = _bf16_exact(rng, want.shape)
  assert got.dtype == jnp.float32
  for a, b in zip((got, *got_vjp(g)), (want, *want_vjp(g))):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4 * float(jnp.max(jnp.abs(b))))
  small_m = shape[0] * want.shape[1] * want.shape[2] < kernel * kernel * shape[-1]
  assert bf16_paths == {"_patch_matmul" if small_m else "bf16_conv"}


@pytest.mark.parametrize("shape", [(2, 5, 7, 3), (2, 1, 1, 64)])
def test_bfloat16_upconv_is_the_transposed_convolution_with_its_gradients(bf16_paths, shape):
  """Both bfloat16 CPU paths of UpConv (sub-pixel `bf16_conv`; the plain patch matmul when
  the kernel outweighs the pixels) against the definition and the float32 gradients."""
  rng = np.random.default_rng(6)
  x = _bf16_exact(rng, shape)
  k = _bf16_exact(rng, (4, 4, shape[-1], 4))
  up = lambda dtype: lambda x, k: layers.UpConv(4, dtype=dtype).apply({"params": {"kernel": k}}, x)
  got, got_vjp = jax.vjp(up(jnp.bfloat16), x, k)
  assert got.dtype == jnp.float32
  scale = float(np.max(np.abs(_numpy_conv_transpose(np.asarray(x), np.asarray(k)))))
  np.testing.assert_allclose(got, _numpy_conv_transpose(np.asarray(x), np.asarray(k)), atol=1e-5 * scale)
  _, want_vjp = jax.vjp(up(jnp.float32), x, k)
  g = _bf16_exact(rng, got.shape)
  for a, b in zip(got_vjp(g), want_vjp(g)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4 * float(jnp.max(jnp.abs(b))))
  assert bf16_paths == {"bf16_conv" if shape[-1] == 3 else "_patch_matmul"}


def test_auto_dtype_is_bfloat16_on_cpus_with_amx_only(monkeypatch):
  config = config_lib.default_config()
  config.dtype = "auto"
  for amx, want in ((True, jnp.bfloat16), (False, jnp.float32)):
    monkeypatch.setattr(host, "cpu_has_amx_bf16", lambda amx=amx: amx)
    assert models.compute_dtype(config) == want
  config.dtype = "float32"
  assert models.compute_dtype(config) == jnp.float32


def _param_count(module, *inputs):
  variables = jax.eval_shape(lambda: module.init(jax.random.key(0), *inputs))
  return sum(np.prod(x.shape) for x in jax.tree.leaves(variables["params"]))


def test_pix2pix_networks_have_the_official_sizes():
  l, ab = jnp.zeros((1, 256, 256, 1)), jnp.zeros((1, 256, 256, 2))
  # pytorch-CycleGAN-and-pix2pix prints 54.414 M / 2.769 M for input_nc=1 (G) and 3 (D).
  assert _param_count(UNetGenerator(num_downs=8), l) == 54_409_858
  assert _param_count(PatchGAN(n_layers=3), l, ab) == 2_765_633
  logits = jax.eval_shape(lambda: PatchGAN().init_with_output(jax.random.key(0), l, ab)[0])
  assert logits.shape == (1, 30, 30, 1)  # 70x70 receptive fields over a 256 px image


@pytest.mark.parametrize("generator,size,activation", [
    ("resnet_unet", 64, "tanh"), ("resnet_unet", 32, "sigmoid"), ("pix2pix_unet", 64, "tanh")])
def test_generators_map_l_to_bounded_ab(generator, size, activation):
  c = config_lib.default_config()
  c.image_size, c.model.generator, c.model.output_activation = size, generator, activation
  c.model.ngf = 8
  g = models.build_generator(c)
  l = jax.random.uniform(jax.random.key(0), (2, size, size, 1), minval=-1, maxval=1)
  variables = jax.jit(g.init)(jax.random.key(1), l)  # one compile, not one per layer
  ab = jax.jit(g.apply)(variables, l)
  assert ab.shape == (2, size, size, 2)
  assert float(jnp.abs(ab).max()) <= 1.0


def test_resnet_unet_predicts_ab_classes_decoded_by_temperature():
  c = config_lib.default_config()
  c.model.num_classes = 256
  g = models.build_generator(c)
  l = jax.random.uniform(jax.random.key(0), (1, 32, 32, 1), minval=-1, maxval=1)
  variables = jax.jit(g.init)(jax.random.key(1), l)
  logits = jax.jit(g.apply)(variables, l)
  assert logits.shape == (1, 32, 32, 256)
  centers = ab_bins.class_centers()

  def annealed_mean(z, t):  # Zhang et al.: softmax(z / T) . bin centres, in float64
    p = np.exp((z - z.max(-1, keepdims=True)) / t)
    return (p / p.sum(-1, keepdims=True)) @ centers

  z = np.asarray(logits, np.float64)
  ab = models.decode_output(g, logits)
  assert c.model.temperature == 0.38
  np.testing.assert_allclose(ab, annealed_mean(z, 0.38), atol=1e-5)
  bolder = models.decode_output(g.clone(temperature=0.1), logits)
  np.testing.assert_allclose(bolder, annealed_mean(z, 0.1), atol=1e-5)
  assert float(jnp.abs(bolder).mean()) > float(jnp.abs(ab).mean())  # lower T: farther from the mean
  c.model.decode = "argmax"
  np.testing.assert_array_equal(models.decode_output(models.build_generator(c), logits), centers[z.argmax(-1)])


def test_pix2pix_unet_derives_num_downs_from_image_size():
  c = config_lib.default_config()
  c.model.generator, c.image_size = "pix2pix_unet", 64
  assert models.build_generator(c).num_downs == 6  # seed 003's 6-level U-Net at 64 px
  c.image_size = 256
  assert models.build_generator(c).num_downs == 8


def test_bad_model_names_and_sizes_are_clear_errors():
  c = config_lib.default_config()
  c.model.generator = "vit"
  with pytest.raises(ValueError, match="unknown model.generator 'vit'"):
    models.build_generator(c)
  with pytest.raises(ValueError, match="divisible by 32"):
    models.build_generator(config_lib.default_config()).init(jax.random.key(0), jnp.zeros((1, 48, 48, 1)))


def test_weight_init_follows_pix2pix():
  variables = jax.jit(UNetGenerator(num_downs=5, ngf=16).init)(jax.random.key(0), jnp.zeros((1, 32, 32, 1)))
  flat = {"/".join(p.key for p in path): np.asarray(leaf)
          for path, leaf in jax.tree_util.tree_flatten_with_path(variables["params"])[0]}
  kernels = np.concatenate([v.ravel() for k, v in flat.items() if k.endswith("kernel")])
  scales = np.concatenate([v.ravel() for k, v in flat.items() if k.endswith("scale")])
  assert abs(kernels.std() - 0.02) < 0.001 and abs(kernels.mean()) < 0.001
  assert abs(scales.mean() - 1.0) < 0.01 and abs(scales.std() - 0.02) < 0.01


def test_output_activations_are_tanh_and_rescaled_sigmoid():
  x = jnp.linspace(-6, 6, 13)
  np.testing.assert_allclose(layers.output_activation("tanh", x), np.tanh(x), rtol=1e-6)
  np.testing.assert_allclose(layers.output_activation("sigmoid", x), 2 / (1 + np.exp(-np.asarray(x))) - 1, atol=1e-6)


def test_batch_norm_running_statistics_follow_pytorchs_momentum():
  torch = pytest.importorskip("torch")
  xs = [np.random.default_rng(i).normal(i, 1 + i, size=(8, 4, 4, 3)).astype(np.float32) for i in range(3)]
  bn = layers.batch_norm(train=True, dtype=jnp.float32)
  variables = bn.init(jax.random.key(0), xs[0])
  reference = torch.nn.BatchNorm2d(3)  # momentum 0.1, eps 1e-5
  for x in xs:
    _, updated = bn.apply(variables, x, mutable=["batch_stats"])
    variables = {**variables, **updated}
    reference(torch.from_numpy(x).permute(0, 3, 1, 2))
  stats = variables["batch_stats"]
  np.testing.assert_allclose(stats["mean"], reference.running_mean.numpy(), rtol=1e-5)
  # The unbiased variance (x 128/127 here), as PyTorch keeps it; flax's nn.BatchNorm keeps the biased one.
  running_var = np.ones(3)
  for x in xs:
    running_var = 0.9 * running_var + 0.1 * x.astype(np.float64).var(axis=(0, 1, 2), ddof=1)
  np.testing.assert_allclose(reference.running_var.numpy(), running_var, rtol=1e-5)
  np.testing.assert_allclose(stats["var"], running_var, rtol=1e-5)
  # In training a batch is normalised by its own statistics, with PyTorch's eps 1e-5 (which
  # matters on a batch this flat: variance 1e-4).
  x = 0.01 * xs[0].astype(np.float64)
  y, _ = bn.apply(variables, x.astype(np.float32), mutable=["batch_stats"])
  params = variables["params"]
  want = (x - x.mean((0, 1, 2))) / np.sqrt(x.var((0, 1, 2)) + 1e-5) * params["scale"] + params["bias"]
  np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4)
  # At inference, by the running statistics.
  y = layers.batch_norm(train=False, dtype=jnp.float32).apply(variables, xs[0])
  want = (xs[0] - stats["mean"]) / np.sqrt(running_var + 1e-5) * params["scale"] + params["bias"]
  np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4)
  reference.eval()
  reference.weight.data = torch.from_numpy(np.asarray(params["scale"]).copy())
  np.testing.assert_allclose(y, reference(torch.from_numpy(xs[0]).permute(0, 3, 1, 2)).detach().numpy().transpose(
      0, 2, 3, 1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_batch_norm_trains_as_flaxs_to_the_bit_with_its_variables(dtype):
  """Only the running variance differs from nn.BatchNorm: a run trains as before, and earlier
  checkpoints and converted weights load."""
  x = jnp.asarray(np.random.default_rng(0).normal(1, 3, size=(4, 9, 7, 5)), dtype)
  ours = layers.batch_norm(train=True, dtype=dtype)
  flax_bn = nn.BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-5, dtype=layers.between_matmuls(dtype),
                         scale_init=layers.bn_scale_init)
  variables = ours.init(jax.random.key(1), x)
  assert jax.tree.map(np.shape, variables) == jax.tree.map(np.shape, flax_bn.init(jax.random.key(1), x))
  (y, stats), (want, flax_stats) = (jax.jit(lambda v, x, m=m: m.apply(v, x, mutable=["batch_stats"]))(variables, x)
                                    for m in (ours, flax_bn))
  assert y.dtype == want.dtype and (y == want).all()
  np.testing.assert_array_equal(stats["batch_stats"]["mean"], flax_stats["batch_stats"]["mean"])


def test_dropout_is_on_in_training_only():
  config = config_lib.default_config()
  # pix2pix drops out in its decoder's 512-wide blocks below the top four: none with 5 downs, one with 6.
  config.model.generator, config.model.num_downs, config.model.ngf = "pix2pix_unet", 6, 8
  generator = models.build_generator(config)
  l = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, size=(2, 64, 64, 1)), jnp.float32)
  variables = generator.init(jax.random.key(0), l)
  train_out = [generator.apply(variables, l, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.key(k)})[0]
               for k in (1, 2)]
  assert not np.allclose(train_out[0], train_out[1])  # pix2pix's noise: its decoder's dropout
  np.testing.assert_array_equal(generator.apply(variables, l, train=False), generator.apply(variables, l, train=False))


# A value other than the default for each model field.
OTHER_VALUES = {"resnet_depth": 34, "encoder_weights": "r34.pth", "num_downs": 4, "ngf": 8, "ndf": 8, "dropout": 0.1,
                "output_activation": "sigmoid", "upsample": "transpose", "num_classes": 256, "decode": "argmax",
                "temperature": 0.5, "prior_correction": 1.0, "discriminator": "none", "d_layers": 2}


@pytest.mark.parametrize("generator", models.GENERATORS)
def test_fields_said_to_do_nothing_leave_the_generator_as_it_is(generator, caplog):
  """What `unused_fields` names must not change the model built; a user who set it is told."""
  defaults = config_lib.default_config()
  assert set(OTHER_VALUES) == set(defaults.model) - {"generator"}
  base = config_lib.default_config()
  base.model.generator, base.model.discriminator = generator, "none"
  for name, value in OTHER_VALUES.items():
    config = config_lib.default_config()
    config.model.generator, config.model.discriminator = generator, "none"
    config.model[name] = value
    unused = models.unused_fields(config, defaults)
    if name in models.DECODE_FIELDS and name in unused:  # kept on the module, read only for classes
      assert not getattr(models.build_generator(config), "num_classes", 0)
    elif name in unused:
      assert models.build_generator(config) == models.build_generator(base), name
    else:
      assert not unused, name
  config = config_lib.default_config()
  config.model.generator = generator
  config.model.decode = "argmax"  # a regressor's: read by none
  assert models.unused_fields(config, defaults) == {"decode": " with model.num_classes 0"}
  config.data.train = "folder:/photos"
  with caplog.at_level("WARNING"):
    config_lib.check_run_config(config)
  assert f"config.model.decode = 'argmax' does nothing for model.generator '{generator}' with model.num_classes 0" in caplog.text


def test_prior_correction_is_read_only_with_a_rebalanced_loss():
  """It divides the loss's class weights back out (`prior_shift`); a loss without them has none."""
  defaults = config_lib.default_config()
  config = config_lib.default_config()
  config.model.generator, config.model.discriminator, config.model.num_classes = "resnet_colorizer", "none", 256
  config.model.prior_correction = 1.0
  assert models.unused_fields(config, defaults) == {}
  assert models.prior_shift(config, np.full(256, 2.0)) == (-np.log(2.0),) * 256
  config.loss.rebalance = False
  assert models.unused_fields(config, defaults) == {"prior_correction": " without a rebalanced loss (loss.rebalance)"}
