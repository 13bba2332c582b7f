"""TinyNet's layers 1-2 with BatchNorm over every position and the max pool after it, as
before issue #20, against today's pooling first (`batch_norm._signed_pool`, exact):
docs/performance.md "Pooling before normalising".

    python -m benchmarks.ab_steps --data-dir ../shared/data/mnist \
      --variants benchmarks/variants/normalise_before_pooling.py
"""

from mnist_jax.cpu_formulation import CpuFormulation

VARIANTS = {"normalise, then pool (before)": CpuFormulation(pool_before_normalising=False),
            "pool first (today)": CpuFormulation()}
