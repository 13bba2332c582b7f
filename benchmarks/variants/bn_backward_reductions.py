"""BatchNorm's backward sums as XLA reductions (before commit cac89c5) against today's
grouped products (`mnist_jax/batch_norm.py`): README "Performance"."""

import jax.numpy as jnp

from mnist_jax import batch_norm


def backward_sums_as_reductions():
  today = batch_norm._normalize_bwd  # pylint: disable=protected-access

  def backward(epsilon, residuals, cotangents):
    del epsilon
    x_NHWC, mean, inv_std, scale, mask_N, count = residuals
    dy_NHWC = cotangents[0]
    x_hat = (x_NHWC - mean) * inv_std
    dbias = jnp.sum(dy_NHWC, axis=(0, 1, 2))
    dscale = jnp.sum(dy_NHWC * x_hat, axis=(0, 1, 2))
    dx_NHWC = (inv_std * scale) * (
        dy_NHWC - mask_N[:, None, None, None] * (dbias + x_hat * dscale) / count)
    return dx_NHWC, dscale, dbias, jnp.zeros_like(mask_N)

  batch_norm._normalize.defvjp(batch_norm._normalize_fwd, backward)  # pylint: disable=protected-access
  return lambda: batch_norm._normalize.defvjp(batch_norm._normalize_fwd, today)  # pylint: disable=protected-access


VARIANTS = {"reductions (before)": backward_sums_as_reductions, "products (today)": None}
