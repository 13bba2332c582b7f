"""Every input gradient as one convolution over dy with the full padding, as before, against
today's row split for unpadded convolutions of small images (`conv.ROW_SPLIT_UP_TO`: Net's conv3
and conv4): docs/performance.md "Input gradients without the padding's rows".

    python -m benchmarks.ab_steps --data-dir ../shared/data/mnist --model net --steps 3 \
      --variants benchmarks/variants/input_grad_full_padding.py
"""

from mnist_jax.cpu_formulation import CpuFormulation

VARIANTS = {"full padding (before)": CpuFormulation(row_split_up_to=0.0),
            "row split (today)": CpuFormulation()}
