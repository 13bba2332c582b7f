"""mnist_jax.batch_norm against the plain version: flax.linen.BatchNorm with autodiff."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from mnist_jax.batch_norm import BatchNorm

FLAX = lambda train: nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                                  use_fast_variance=False)


def _inputs(n=12):
  key_x, key_s, key_b, key_dy = jax.random.split(jax.random.key(0), 4)
  # A mean far from zero and unequal channel scales, as after a conv with a bias.
  x = 3.0 + jax.random.normal(key_x, (n, 6, 5, 4)) * jnp.array([0.5, 1.0, 2.0, 4.0])
  params = {"scale": 1 + 0.3 * jax.random.normal(key_s, (4,)),
            "bias": 0.3 * jax.random.normal(key_b, (4,))}
  batch_stats = {"mean": jnp.arange(4.0), "var": jnp.arange(1.0, 5.0)}
  dy = jax.random.normal(key_dy, x.shape)
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
  np.testing.assert_allclose(got_y[real], want_y[real], atol=1e-5)
  for k in ("mean", "var"):
    np.testing.assert_allclose(got_stats[k], want_stats["BatchNorm_0"][k], rtol=1e-5)
  np.testing.assert_allclose(got_grads[0], want_grads[0], atol=2e-5)  # dx
  for k in ("scale", "bias"):
    np.testing.assert_allclose(got_grads[1][k], want_grads[1]["BatchNorm_0"][k], rtol=1e-5,
                               atol=1e-5)


def test_padded_examples_do_not_change_the_statistics():
  x, variables, _ = _inputs()
  junk = x.at[9:].set(1e3)
  mask_N = jnp.array([1.0] * 9 + [0.0] * 3)
  bn = BatchNorm(False)
  y_real, stats_real = bn.apply(variables, x[:9], mutable=["batch_stats"])
  y_pad, stats_pad = bn.apply(variables, junk, mask_N, mutable=["batch_stats"])
  np.testing.assert_allclose(y_pad[:9], y_real, atol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), stats_pad, stats_real)


def test_gradient_matches_finite_differences():
  with jax.enable_x64(True):
    x, variables, dy = jax.tree.map(lambda v: jnp.asarray(v, jnp.float64), _inputs(n=4))
    mask_N = jnp.array([1.0, 1.0, 1.0, 0.0])
    f = lambda x: jnp.sum(BatchNorm(False).apply(variables, x, mask_N,
                                                 mutable=["batch_stats"])[0] * dy)
    check_grads(f, (x,), order=1, modes=["rev"], atol=1e-6, rtol=1e-6)


def test_evaluation_uses_the_running_statistics_like_flax():
  x, variables, _ = _inputs()
  flax_vars = {k: {"BatchNorm_0": v} for k, v in variables.items()}
  want = FlaxWithMaskN(False).apply(flax_vars, x)
  got = BatchNorm(True).apply(variables, x)
  np.testing.assert_allclose(got, want, atol=1e-6)


def test_initial_variables_are_flax_s():
  x, _, _ = _inputs()
  got = BatchNorm(False).init(jax.random.key(0), x)
  want = FLAX(True).init(jax.random.key(0), x)
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), got, want)
