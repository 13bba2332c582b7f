"""mnist_jax.batch_norm against the plain version: flax.linen.BatchNorm with autodiff."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from conftest import normal
from mnist_jax.batch_norm import BatchNorm
from tolerance import (EPS32, assert_trees_as_accurate, assert_within, max_abs, sum_order_bound,
                       to_float64)

FLAX = lambda train: nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                                  use_fast_variance=False)


def _inputs(n=12):
  # A mean far from zero and unequal channel scales, as after a conv with a bias.
  x = jnp.asarray(3.0 + normal(0, (n, 6, 5, 4)) * np.float32([0.5, 1.0, 2.0, 4.0]))
  params = {"scale": jnp.asarray(1 + 0.3 * normal(1, (4,))),
            "bias": jnp.asarray(0.3 * normal(2, (4,)))}
  batch_stats = {"mean": jnp.arange(4.0), "var": jnp.arange(1.0, 5.0)}
  dy = jnp.asarray(normal(3, x.shape))
  return x, {"params": params, "batch_stats": batch_stats}, dy


def _train(module, variables, x, mask_N, dy):
  """Output, running stats, and the gradients of <output, dy> for x, scale and bias."""
  def f(x, params):
    y, updates = module.apply({**variables, "params": params}, x, mask_N,
                              mutable=["batch_stats"])
    return jnp.sum(y * dy), (y, updates["batch_stats"])
  (_, (y, stats)), grads = jax.value_and_grad(f, argnums=(0, 1), has_aux=True)(
      x, variables["params"])
  return y, stats, grads


class FlaxWithMaskN(nn.Module):
  """flax.linen.BatchNorm called with our `mask_N` convention."""
  train: bool

  @nn.compact
  def __call__(self, x, mask_N=None):
    mask = None if mask_N is None else jnp.broadcast_to(
        mask_N[:, None, None, None] > 0, x.shape)
    return FLAX(self.train)(x, mask=mask)


@pytest.mark.parametrize("masked", [False, True])
def test_training_matches_flax_in_value_gradient_and_running_stats(masked):
  x, variables, dy = _inputs()
  mask_N = jnp.array([1.0] * 9 + [0.0] * 3) if masked else None
  if masked:  # a padded example's upstream gradient is zero, as the masked loss makes it
    dy = dy * mask_N[:, None, None, None]
  # Flax names its variables under the submodule; ours sits at the top.
  flax_vars = {k: {"BatchNorm_0": v} for k, v in variables.items()}
  want_y, want_stats, want_grads = _train(FlaxWithMaskN(True), flax_vars, x, mask_N, dy)
  got_y, got_stats, got_grads = _train(BatchNorm(False), variables, x, mask_N, dy)

  real = slice(None, 9) if masked else slice(None)
  bound = _bounds(x[real], variables, dy[real])
  assert_within(got_y[real], want_y[real], bound["y"], "y")
  for k in ("mean", "var"):
    assert_within(got_stats[k], want_stats["BatchNorm_0"][k], bound[k], k)
  assert_within(got_grads[0][real], want_grads[0][real], bound["dx"], "dx")
  for k in ("scale", "bias"):
    assert_within(got_grads[1][k], want_grads[1]["BatchNorm_0"][k], bound[f"d{k}"], f"d{k}")


def _bounds(x, variables, dy):
  """How far two float32 BatchNorms may differ (first order), channel by channel: every
  quantity comes from sums over a channel's n = N*H*W values (tolerance.py), scaled as it
  enters the formula."""
  x, dy = np.asarray(x, np.float64), np.asarray(dy, np.float64)
  params = jax.tree.map(lambda v: np.asarray(v, np.float64), variables["params"])
  n = x.size // x.shape[-1]
  channel_max = lambda v: np.abs(v).max(axis=(0, 1, 2))
  channel_sum = lambda v: np.abs(v).sum(axis=(0, 1, 2))
  mean, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
  inv_std = 1 / np.sqrt(var + 1e-5)
  x_hat = (x - mean) * inv_std
  # The mean errs by its sum's rounding (the terms' magnitudes add up to sum |x|); the
  # variance, a mean of squared deviations, by its own and through the mean's error.
  mean_error = sum_order_bound(n, 1) * channel_sum(x) / n
  var_error = sum_order_bound(n, 1) * var + 2 * channel_sum(x - mean) / n * mean_error
  x_hat_error = inv_std * mean_error + channel_max(x_hat) * var_error * inv_std ** 2 / 2
  ops = 4 * EPS32  # the few roundings of the elementwise formulas
  gain = np.abs(params["scale"]) * inv_std
  dbias = sum_order_bound(n, 1) * channel_sum(dy)
  # sum(dy * x_hat): its own rounding, plus the mean's error (a shift of x_hat by
  # mean_error * inv_std, times sum(dy)) and the variance's (a rescaling of x_hat).
  dscale = (sum_order_bound(n, 1) * channel_sum(dy * x_hat)
            + mean_error * inv_std * np.abs(dy.sum(axis=(0, 1, 2)))
            + np.abs((dy * x_hat).sum(axis=(0, 1, 2))) * var_error * inv_std ** 2 / 2)
  gain_error = gain * var_error * inv_std ** 2 / 2
  return {
      # y = scale * x_hat + bias
      "y": (np.abs(params["scale"]) * x_hat_error
            + ops * (np.abs(params["scale"]) * channel_max(x_hat) + np.abs(params["bias"]))).max(),
      "mean": (0.1 * mean_error).max() + ops * max_abs(variables["batch_stats"]["mean"]),
      "var": (0.1 * var_error).max() + ops * max_abs(variables["batch_stats"]["var"] + var),
      "dbias": dbias.max(), "dscale": dscale.max(),
      # dx = scale / std * (dy - (dbias + x_hat * dscale) / n)
      "dx": (gain * ((dbias + channel_max(x_hat) * dscale + x_hat_error * channel_sum(dy * x_hat)) / n
                     + ops * channel_max(dy) * (1 + channel_max(x_hat)))
             + gain_error * channel_max(dy) * (1 + channel_max(x_hat))).max(),
  }


def test_padded_examples_do_not_change_the_statistics():
  x, variables, _ = _inputs()
  junk = x.at[9:].set(1e3)
  mask_N = jnp.array([1.0] * 9 + [0.0] * 3)
  bn = BatchNorm(False)
  y_real, stats_real = bn.apply(variables, x[:9], mutable=["batch_stats"])
  y_pad, stats_pad = bn.apply(variables, junk, mask_N, mutable=["batch_stats"])
  bound = _bounds(x[:9], variables, jnp.ones_like(x[:9]))
  assert_within(y_pad[:9], y_real, bound["y"], "y")
  for k in ("mean", "var"):
    assert_within(stats_pad["batch_stats"][k], stats_real["batch_stats"][k], bound[k], k)


def test_gradient_matches_finite_differences():
  with jax.enable_x64(True):
    x, variables, dy = jax.tree.map(lambda v: jnp.asarray(v, jnp.float64), _inputs(n=4))
    mask_N = jnp.array([1.0, 1.0, 1.0, 0.0])
    f = lambda x: jnp.sum(BatchNorm(False).apply(variables, x, mask_N,
                                                 mutable=["batch_stats"])[0] * dy)
    # float64 throughout: central differences with check_grads' step 1e-4 (float64's
    # default) err by O(step^2) = 1e-8 relative; rounding adds ~1e-12.
    check_grads(f, (x,), order=1, modes=["rev"], atol=1e-6, rtol=1e-6)


def test_evaluation_uses_the_running_statistics_like_flax():
  x, variables, _ = _inputs()
  flax_vars = {k: {"BatchNorm_0": v} for k, v in variables.items()}
  want = FlaxWithMaskN(False).apply(flax_vars, x)
  got = BatchNorm(True).apply(variables, x)
  # No sums in eval mode: y = (x - mean) * scale / sqrt(var + eps) + bias, a handful of
  # roundings of values no larger than |x - mean| * gain.
  stats = variables["batch_stats"]
  gain = max_abs(variables["params"]["scale"]) / np.sqrt(np.min(stats["var"]) + 1e-5)
  assert_within(got, want, sum_order_bound(6, (max_abs(x) + max_abs(stats["mean"])) * gain
                                           + max_abs(variables["params"]["bias"])))


def test_initial_variables_are_flax_s():
  x, _, _ = _inputs()
  got = BatchNorm(False).init(jax.random.key(0), x)
  want = FLAX(True).init(jax.random.key(0), x)
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), got, want)


@pytest.mark.parametrize("train", [True, False])
def test_pooling_first_is_pooling_the_output(train):
  """`pool=`: the max pool of ReLU(BatchNorm(x)), computed by pooling first (a min pool
  where the scale is negative), in value, gradient and running statistics; masked."""
  from mnist_jax.models import max_pool_2x2  # pylint: disable=import-outside-toplevel
  x, variables, _ = _inputs()
  variables["params"]["scale"] = variables["params"]["scale"] * jnp.array([1.0, -1.0, 1.0, -0.5])
  mask_N = jnp.array([1.0] * 10 + [0.0] * 2)
  dy = jnp.asarray(normal(4, (12, 3, 2, 4)))  # 6x5 pooled to 3x2: PyTorch drops the odd edge
  pooled = lambda train: lambda bn_vars, x: nn.relu(BatchNorm(not train, pool=max_pool_2x2).apply(
      bn_vars, x, mask_N, mutable=["batch_stats"])[0])
  then_pooled = lambda train: lambda bn_vars, x: max_pool_2x2(nn.relu(BatchNorm(not train).apply(
      bn_vars, x, mask_N, mutable=["batch_stats"])[0]))

  def value_and_grads(f, variables, x):
    y, vjp = jax.vjp(lambda params, x: f({**variables, "params": params}, x),
                     variables["params"], x)
    return y, vjp(dy.astype(y.dtype))

  got = value_and_grads(pooled(train), variables, x)
  reference = value_and_grads(then_pooled(train), variables, x)
  with jax.enable_x64(True):
    exact = value_and_grads(then_pooled(train), to_float64(variables), to_float64(x))
  assert_trees_as_accurate(got, reference, exact, "pooled first ")
  np.testing.assert_array_equal(got[0], reference[0])  # the same roundings, another order
  stats = [BatchNorm(False, pool=pool).apply(variables, x, mask_N, mutable=["batch_stats"])[1]
           for pool in (max_pool_2x2, None)]
  jax.tree.map(np.testing.assert_array_equal, *stats)
