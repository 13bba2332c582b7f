"""The CPU formulation's BatchNorm (mnist_jax/cpu_formulation.py): PyTorch's BatchNorm2d
with a hand-written backward pass.

It holds the variables of `layers.BatchNorm` and computes its numbers, which
tests/batch_norm_test.py checks in value, gradient and running statistics, masked or not.
The difference is the gradient: autodiff differentiates through the batch mean and
variance and leaves XLA ~10 channel reductions per layer, each a pass over the
activations; the closed form below needs two. Its per-channel sums, forward and backward,
are partly vector-matrix products (`sum_per_channel` says why).
"""

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from mnist_jax import layers


def sum_per_channel(x_NHWC, weights_N):
  """sum over n, h, w of weights[n] * x[n, h, w, c]: the statistics and their gradients.

  As one reduction, XLA:CPU rewrites each such sum into a reduce-window over blocks of
  32 images (for accuracy) that it runs slowly. Here the images are first summed in
  groups of up to 32 by vector-matrix products (Eigen, every output a chain of at most
  32 terms), and only those partial sums, 32x fewer, are left to XLA's reduction.
  TinyNet, 2 host devices, a step in ms: the forward statistics so, 112.0 -> 100.3 (one
  comparison); the backward's two sums too, 5-7% less again (docs/performance.md;
  benchmarks/variants/bn_sums_as_reductions.py compares it with `sum_per_channel_reduced`).
  Longer product chains (all n*h*w rows in one product) round 10x worse than PyTorch's
  cascade sums (tests/torch_parity_test.py).
  """
  n, h, w, c = x_NHWC.shape
  group = next(g for g in range(min(n, 32), 0, -1) if n % g == 0)
  partial_GF = jnp.einsum("gk,gkf->gf", weights_N.reshape(n // group, group),
                            x_NHWC.reshape(n // group, group, h * w * c))
  return partial_GF.reshape(-1, c).sum(axis=0)


def sum_per_channel_reduced(x_NHWC, weights_N):
  """`sum_per_channel` as one XLA reduction (CpuFormulation(bn_sums_as_products=False))."""
  return jnp.sum(x_NHWC * weights_N[:, None, None, None], axis=(0, 1, 2))


def _signed_pool(x_NHWC, scale, pool):
  """`pool` (a max pool) on channels whose scale is >= 0, the same min pool on the others.

  BatchNorm is monotone per channel, increasing where its gain (scale / std) is >= 0 and
  decreasing where it is < 0, and so is ReLU after it: a max pool of their output is
  their output at the position this picks, exactly (rounding is monotone too). So they
  run on a quarter of the elements, and the backward's sums over those only.
  """
  sign_C = jnp.where(scale >= 0, 1, -1).astype(x_NHWC.dtype)
  return sign_C * pool(sign_C * x_NHWC)


def _normalize_fwd(x_NHWC, scale, bias, mask_N, epsilon, pool, sums):
  count = jnp.sum(mask_N) * x_NHWC.shape[1] * x_NHWC.shape[2]
  mean = sums(x_NHWC, mask_N) / count
  # Two passes, as PyTorch: the variance of the centred values, biased (as Flax stores it).
  var = sums(jnp.square(x_NHWC - mean), mask_N) / count
  inv_std = lax.rsqrt(var + epsilon)
  picked_NHWC = x_NHWC if pool is None else _signed_pool(x_NHWC, scale, pool)
  y_NHWC = (picked_NHWC - mean) * (inv_std * scale) + bias
  return (y_NHWC, mean, var), (x_NHWC, picked_NHWC, mean, inv_std, scale, mask_N, count)


def _normalize_bwd(epsilon, pool, sums, residuals, cotangents):
  del epsilon
  x_NHWC, picked_NHWC, mean, inv_std, scale, mask_N, count = residuals
  dy_NHWC = cotangents[0]  # mean and var leave only through stop_gradient
  every_image_N = jnp.ones(x_NHWC.shape[:1], x_NHWC.dtype)  # masked ones too, as autodiff
  dbias = sums(dy_NHWC, every_image_N)
  dscale = sums(dy_NHWC * ((picked_NHWC - mean) * inv_std), every_image_N)
  if pool is not None:  # dy goes back to the positions the pool picked
    dy_NHWC = jax.vjp(lambda x: _signed_pool(x, scale, pool), x_NHWC)[1](dy_NHWC)[0]
  x_hat = (x_NHWC - mean) * inv_std
  # Only real examples shape the statistics; a padded one sees just its own affine map.
  dx_NHWC = (inv_std * scale) * (
      dy_NHWC - mask_N[:, None, None, None] * (dbias + x_hat * dscale) / count)
  return dx_NHWC, dscale, dbias, jnp.zeros_like(mask_N)


_normalize = jax.custom_vjp(
    lambda x, s, b, m, eps, pool, sums: _normalize_fwd(x, s, b, m, eps, pool, sums)[0],
    nondiff_argnums=(4, 5, 6))
_normalize.defvjp(_normalize_fwd, _normalize_bwd)


class BatchNorm(nn.Module):
  """`layers.BatchNorm` with the closed-form backward; `mask_N` leaves padded examples out.

  `pool`: a max pool applied to the output, computed before normalising (`_signed_pool`).
  `sums_as_products`: the per-channel sums as `sum_per_channel` (else one reduction each).
  """
  use_running_average: bool
  momentum: float | jax.Array = 0.1
  epsilon: float = 1e-5
  pool: Callable | None = None
  sums_as_products: bool = True

  @nn.compact
  def __call__(self, x_NHWC, mask_N=None):
    scale, bias, ra_mean, ra_var = layers.batch_norm_variables(self, x_NHWC.shape[-1])
    if self.use_running_average:
      if self.pool is not None:
        x_NHWC = _signed_pool(x_NHWC, scale, self.pool)
      return (x_NHWC - ra_mean.value) * (lax.rsqrt(ra_var.value + self.epsilon) * scale) + bias
    if mask_N is None:
      mask_N = jnp.ones(x_NHWC.shape[:1], x_NHWC.dtype)
    sums = sum_per_channel if self.sums_as_products else sum_per_channel_reduced
    y_NHWC, mean, var = _normalize(x_NHWC, scale, bias, mask_N.astype(x_NHWC.dtype),
                                   self.epsilon, self.pool, sums)
    layers.record_batch_moments(self, self.momentum, ra_mean, ra_var, mean, var)
    return y_NHWC
