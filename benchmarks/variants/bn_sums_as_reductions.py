"""Every BatchNorm sum (the forward statistics and the backward's two) as one XLA reduction,
as before commit e390a32, against today's grouped products (`batch_norm.sum_per_channel`):
docs/performance.md "BatchNorm statistics as products".

    python benchmarks/ab_steps.py --data-dir ../shared/data/mnist \
      --variants benchmarks/variants/bn_sums_as_reductions.py
"""

import jax.numpy as jnp

from mnist_jax import batch_norm


def sums_as_reductions():
  today = batch_norm.sum_per_channel
  batch_norm.sum_per_channel = lambda x_NHWC, weights_N: jnp.sum(
      x_NHWC * weights_N[:, None, None, None], axis=(0, 1, 2))

  def undo():
    batch_norm.sum_per_channel = today
  return undo


VARIANTS = {"reductions (before)": sums_as_reductions, "products (today)": None}
