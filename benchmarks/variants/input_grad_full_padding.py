"""Every input gradient as one convolution over dy with the full padding, as before, against
today's row split for unpadded convolutions of small images (`conv.ROW_SPLIT_UP_TO`: Net's conv3
and conv4): docs/performance.md "Input gradients without the padding's rows".

    python benchmarks/ab_steps.py --data-dir ../shared/data/mnist --model net --steps 3 \
      --variants benchmarks/variants/input_grad_full_padding.py
"""

from mnist_jax import conv


def full_padding():
  today = conv.ROW_SPLIT_UP_TO
  conv.ROW_SPLIT_UP_TO = 0.0

  def undo():
    conv.ROW_SPLIT_UP_TO = today
  return undo


VARIANTS = {"full padding (before)": full_padding, "row split (today)": None}
