"""Every BatchNorm sum (the forward statistics and the backward's two) as one XLA reduction,
as before commit e390a32, against today's grouped products (`batch_norm.sum_per_channel`):
docs/performance.md "BatchNorm statistics as products".

    python -m benchmarks.ab_steps --data-dir ../shared/data/mnist \
      --variants benchmarks/variants/bn_sums_as_reductions.py
"""

from mnist_jax.cpu_formulation import CpuFormulation

VARIANTS = {"reductions (before)": CpuFormulation(bn_sums_as_products=False),
            "products (today)": CpuFormulation()}
