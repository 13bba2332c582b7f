"""Today's step, written for XLA:CPU, against the same model left to XLA's own choices: the
convolutions as `lax.conv_general_dilated` plus the bias, with autodiff's gradients (no
written-out backward, no first layer as a product of patches), and then also every BatchNorm
sum as one reduction. On an H200, idiomatic Flax ran TinyNet's step 1.3-1.5x faster than
ours (docs/performance.md "On a GPU"); this tells which part of the formulation costs it there.

    python benchmarks/ab_steps.py --data-dir ../shared/data/mnist \
      --variants benchmarks/variants/xla_formulation.py
"""

import os
import sys

from jax import lax

from mnist_jax import conv

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bn_sums_as_reductions  # pylint: disable=wrong-import-position


def xla_convolutions():
  today = conv.conv2d
  conv.conv2d = lambda x_NHWC, kernel_HWIO, pads, bias_O: lax.conv_general_dilated(
      x_NHWC, kernel_HWIO, (1, 1), pads, dimension_numbers=("NHWC", "HWIO", "NHWC")) + bias_O

  def undo():
    conv.conv2d = today
  return undo


def xla_convolutions_and_reductions():
  undos = [xla_convolutions(), bn_sums_as_reductions.sums_as_reductions()]
  return lambda: [undo() for undo in undos]


VARIANTS = {"today": None, "XLA's convolutions": xla_convolutions,
            "and XLA's reductions": xla_convolutions_and_reductions}
