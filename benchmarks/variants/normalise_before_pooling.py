"""TinyNet's layers 1-2 with BatchNorm over every position and the max pool after it, as
before issue #20, against today's pooling first (`batch_norm._signed_pool`, exact):
docs/performance.md "Pooling before normalising".

    python benchmarks/ab_steps.py --data-dir ../shared/data/mnist \
      --variants benchmarks/variants/normalise_before_pooling.py
"""

from mnist_jax import models


def normalise_then_pool():
  today = models.BatchNorm

  def batch_norm(*, pool=None, **kwargs):
    module = today(**kwargs)
    return module if pool is None else lambda x_NHWC, mask_N=None: pool(module(x_NHWC, mask_N))
  models.BatchNorm = batch_norm

  def undo():
    models.BatchNorm = today
  return undo


VARIANTS = {"normalise, then pool (before)": normalise_then_pool, "pool first (today)": None}
