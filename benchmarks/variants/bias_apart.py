"""The convolutions' biases as before: added in a pass of their own after the convolution
(for the first layer: after its product of patches) and their gradients as reductions over
dy, against today's bias with the kernel (one more patch of ones in the first layer's
product; each bias's gradient from its kernel gradient's convolution):
docs/performance.md "The bias with the kernel".

    python -m benchmarks.ab_steps --data-dir ../shared/data/mnist \
      --variants benchmarks/variants/bias_apart.py
"""

from mnist_jax.cpu_formulation import CpuFormulation

VARIANTS = {"bias apart (before)": CpuFormulation(bias_with_kernel=False),
            "bias with the kernel (today)": CpuFormulation()}
