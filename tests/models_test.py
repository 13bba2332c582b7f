import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import normal
from mnist_jax import Config, create_train_state, models
from mnist_jax.reporting import count_params
from tolerance import assert_as_accurate, assert_trees_as_accurate, to_float64

# The original's torchsummary table for TinyNet, layer by layer.
TINYNET_LAYER_PARAMS = {"conv1": 200, "bn1": 40, "conv2": 5_068, "bn2": 56,
                        "conv3": 16_192, "bn3": 128, "fc": 650}
NET_LAYER_PARAMS = {"conv1": 320, "conv2": 18_496, "conv3": 73_856, "conv4": 295_168,
                    "fc1": 204_850, "fc2": 510}


def _init(model):
  # The entry points' initialisation, one compiled program (flax's init run op by op compiles
  # each of its operations; the values are bitwise the same: tests/epoch_test.py).
  state = create_train_state(jax.random.key(0), model, Config(), steps_per_epoch=1)
  return {"params": state.params, "batch_stats": state.batch_stats}


@pytest.mark.parametrize("model, layers, total", [
    (models.TinyNet(), TINYNET_LAYER_PARAMS, 22_334),
    (models.Net(), NET_LAYER_PARAMS, 593_200),
])
def test_parameter_counts_match_the_original(model, layers, total):
  params = _init(model)["params"]
  assert {name: count_params(p) for name, p in params.items()} == layers
  assert count_params(params) == total


@pytest.mark.parametrize("model", [models.TinyNet(), models.Net()])
def test_logits_shape(model):
  variables = _init(model)
  x = jnp.asarray(normal(1, (5, 28, 28, 1)))
  assert model.apply(variables, x).shape == (5, 10)


def test_net_flattens_4096_features():
  variables = _init(models.Net())
  assert variables["params"]["fc1"]["kernel"].shape == (4096, 50)


def test_init_follows_pytorch_bounds():
  params = _init(models.TinyNet())["params"]
  for name, fan_in in (("conv1", 9), ("conv2", 9 * 20), ("conv3", 9 * 28), ("fc", 64)):
    bound = 1 / np.sqrt(fan_in)
    for leaf in (params[name]["kernel"], params[name]["bias"]):
      assert np.abs(leaf).max() <= bound
      # U(-b, b) has std b/sqrt(3): not a narrower or wider init. The sample std of n
      # uniform draws varies by sqrt(0.8 / (4n)) relative (kurtosis 1.8): under 1.8% for
      # n >= 640, so 15% is 8 standard deviations.
      if leaf.size > 100:
        assert np.std(leaf) == pytest.approx(bound / np.sqrt(3), rel=0.15)


def test_eval_mode_uses_running_statistics():
  model = models.TinyNet()
  variables = _init(model)
  # Non-trivial running statistics, so a batch-statistics bug would show.
  variables = {"params": variables["params"], "batch_stats": jax.tree.map(
      lambda s: s + 0.3, variables["batch_stats"])}
  x = jnp.asarray(normal(1, (8, 28, 28, 1)))
  alone = model.apply(variables, x[:1], train=False)
  in_batch = model.apply(variables, x, train=False)[:1]
  with_others = model.apply(variables, jnp.concatenate([x[:1], 5 * x[1:]]), train=False)[:1]
  with jax.enable_x64(True):
    exact = model.apply(to_float64(variables), to_float64(x[:1]), train=False)
  assert_as_accurate(in_batch, alone, exact)
  assert_as_accurate(with_others, alone, exact)
  # In train mode the same example's logits depend on the rest of the batch.
  train_a, _ = model.apply(variables, x, train=True, mutable=["batch_stats"])
  train_b, _ = model.apply(variables, jnp.concatenate([x[:1], 5 * x[1:]]), train=True,
                           mutable=["batch_stats"])
  assert np.abs(train_a[0] - train_b[0]).max() > 1e-3


def test_train_mode_updates_batch_stats_with_pytorch_momentum():
  model = models.TinyNet()
  variables = _init(model)
  x = jnp.asarray(normal(1, (16, 28, 28, 1))) * 2 + 1
  _, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
  conv_mean = lambda params, x: 0.1 * nn.Conv(20, (3, 3), padding="SAME").apply(
      {"params": params}, x).mean(axis=(0, 1, 2))
  # PyTorch momentum 0.1: new = 0.9 * old + 0.1 * batch; old mean is 0.
  with jax.enable_x64(True):
    exact = conv_mean(to_float64(variables["params"]["conv1"]), to_float64(x))
  assert_as_accurate(updates["batch_stats"]["bn1"]["mean"],
                     conv_mean(variables["params"]["conv1"], x), exact)


def test_masked_examples_do_not_enter_batch_statistics():
  model = models.TinyNet()
  variables = _init(model)
  x = jnp.asarray(normal(1, (8, 28, 28, 1)))
  padded = jnp.concatenate([x, 100 * jnp.ones((4, 28, 28, 1))])
  mask = jnp.concatenate([jnp.ones(8), jnp.zeros(4)])
  logits, stats = model.apply(variables, x, train=True, mutable=["batch_stats"])
  logits_p, stats_p = model.apply(variables, padded, train=True, mask_N=mask,
                                  mutable=["batch_stats"])
  with jax.enable_x64(True):
    exact = model.apply(to_float64(variables), to_float64(x), train=True, mutable=["batch_stats"])
  assert_trees_as_accurate((logits_p[:8], stats_p), (logits, stats), exact)


def test_max_pool_equals_flax_max_pool_in_value_and_gradient():
  x = jnp.asarray(normal(0, (3, 8, 10, 4)))  # no ties
  ours = lambda x: models.max_pool_2x2(x)
  flax_pool = lambda x: nn.max_pool(x, (2, 2), strides=(2, 2))
  np.testing.assert_array_equal(ours(x), flax_pool(x))
  weights = jnp.asarray(normal(1, (3, 4, 5, 4)))
  grad = lambda f: jax.grad(lambda x: jnp.sum(f(x) * weights))(x)
  np.testing.assert_array_equal(grad(ours), grad(flax_pool))


def test_max_pool_drops_odd_edges_like_pytorch():
  x = jnp.arange(5 * 5, dtype=jnp.float32).reshape(1, 5, 5, 1)
  np.testing.assert_array_equal(models.max_pool_2x2(x)[0, :, :, 0], [[6, 8], [16, 18]])


def test_unknown_model_is_rejected():
  with pytest.raises(ValueError, match="unknown model"):
    models.get_model("resnet")
