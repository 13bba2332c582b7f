"""The convolutions' biases as before: added in a pass of their own after the convolution
(for the first layer: after its product of patches) and their gradients as reductions over
dy, against today's `conv.conv2d` with the bias (one more patch of ones in the first layer's
product; each bias's gradient from its kernel gradient's convolution):
docs/performance.md "The bias with the kernel".

    python benchmarks/ab_steps.py --data-dir ../shared/data/mnist \
      --variants benchmarks/variants/bias_apart.py
"""

from mnist_jax import conv


def bias_apart():
  today = conv.conv2d
  conv.conv2d = lambda x_NHWC, kernel_HWIO, pads, bias_O: today(x_NHWC, kernel_HWIO, pads) + bias_O

  def undo():
    conv.conv2d = today
  return undo


VARIANTS = {"bias apart (before)": bias_apart, "bias with the kernel (today)": None}
