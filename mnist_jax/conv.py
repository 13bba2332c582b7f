"""The CPU formulation's convolution (mnist_jax/cpu_formulation.py): 2-D, NHWC input, HWIO
kernel, stride 1, with its backward pass written out as convolutions in that same layout:
what XLA:CPU runs with its fast (Eigen) kernels.

Why: XLA:CPU rewrites autodiff's gradient convolutions (kernel "OI", or batch and
feature swapped) into that layout only at a program's top level. Inside a loop body
(`lax.scan` of training steps) it leaves them as they are and runs them as plain loop
nests, many times slower than the same steps one program each (issue #13: 17-25x for
TinyNet; tests/conv_test.py checks the compiled layouts). Written out here, a step is the
same fast program inside a loop as outside one, with autodiff's numbers within rounding
(tests/conv_test.py). GPUs and TPUs choose their own layouts either way. A one-channel
input (the first layer) goes forward as a matrix product of its 3x3 patches instead
(`_conv_forward` says why), and a bias is computed with the kernel, forward and backward.
"""

import functools

import jax
import jax.numpy as jnp
from jax import lax

_NHWC_HWIO = ("NHWC", "HWIO", "NHWC")

# An input gradient whose dy has at most this fraction of x's rows is computed row by row
# (`_input_grad`); above it, as one convolution over dy with the full padding. 0: never.
ROW_SPLIT_UP_TO = 0.85


def _conv(x_NHWC, kernel_HWIO, pads):
  return lax.conv_general_dilated(x_NHWC, kernel_HWIO, (1, 1), pads,
                                  dimension_numbers=_NHWC_HWIO)


def _conv_forward(x_NHWC, kernel_HWIO, bias_O, pads):
  if x_NHWC.shape[-1] > 1:
    y_NHWC = _conv(x_NHWC, kernel_HWIO, pads)
    return y_NHWC if bias_O is None else y_NHWC + bias_O
  # One input channel (both models' first layer): each output is only 9 products, which
  # Eigen's convolution runs at ~9 GFLOP/s. As one matrix product of the 3x3 patches,
  # TinyNet's conv1 at batch 256 takes 4.2 ms instead of 8.3 on 2 cores
  # (benchmarks/conv_layers.py), with the same sums (a training step's results were
  # bitwise unchanged on this jaxlib; docs/performance.md). The bias is one more "patch"
  # of ones in that product, instead of a pass of its own over the output.
  kh, kw = kernel_HWIO.shape[:2]
  padded_NHW = jnp.pad(x_NHWC[..., 0], ((0, 0), *pads))
  h_out, w_out = padded_NHW.shape[1] - kh + 1, padded_NHW.shape[2] - kw + 1
  patches = [padded_NHW[:, i:i + h_out, j:j + w_out] for i in range(kh) for j in range(kw)]
  weights_KO = kernel_HWIO.reshape(kh * kw, -1)
  if bias_O is not None:
    patches.append(jnp.ones_like(patches[0]))
    weights_KO = jnp.concatenate([weights_KO, bias_O[None]])
  return jnp.stack(patches, axis=-1) @ weights_KO


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 4))
def conv2d(x_NHWC, kernel_HWIO, pads: tuple[tuple[int, int], ...], bias_O=None,
           row_split_up_to: float = ROW_SPLIT_UP_TO):
  """`lax.conv_general_dilated` at stride 1 with explicit (low, high) pads per spatial axis,
  plus `bias_O` per output channel if given (what `flax.linen.Conv` computes).
  `row_split_up_to`: see ROW_SPLIT_UP_TO (only the backward pass's speed depends on it)."""
  return _conv_forward(x_NHWC, kernel_HWIO, bias_O, pads)


def _conv2d_fwd(x_NHWC, kernel_HWIO, pads, bias_O, row_split_up_to):
  del row_split_up_to
  return _conv_forward(x_NHWC, kernel_HWIO, bias_O, pads), (x_NHWC, kernel_HWIO, bias_O)


def _input_grad(dy_NHWC, kernel_HWIO, pads, height, row_split_up_to):
  """dy correlated with the kernel turned 180 degrees, in and out swapped, padded so that
  every input position sees every kernel tap ("full" padding)."""
  kh, kw = kernel_HWIO.shape[:2]
  (top, bottom), (left, right) = ((k - 1 - low, k - 1 - high)
                                  for k, (low, high) in zip(kernel_HWIO.shape, pads))
  if dy_NHWC.shape[1] > row_split_up_to * height:
    return _conv(dy_NHWC, jnp.flip(kernel_HWIO, (0, 1)).transpose(0, 1, 3, 2),
                 ((top, bottom), (left, right)))
  # Where dy has far fewer rows than x (unpadded convolutions of small images: Net's conv3
  # and conv4), the full padding's zeros are much of what the convolution multiplies
  # (conv4: dy 8 x 8 padded to 12 x 12, 36% of its multiplications). Instead, each
  # kernel row's correlation along W only, over dy's own rows (one convolution, the kernel
  # rows as blocks of output channels), then those rows shifted into place and summed.
  # One core, batch 256: conv4's input gradient 140.9 -> 111.4 ms, conv3's 58.4 -> 43.2
  # (benchmarks/conv_layers.py); conv2's (24 of 26 rows) was slower (docs/performance.md).
  n, h_dy, _, c_out = dy_NHWC.shape
  rows_1WOK = jnp.flip(kernel_HWIO, 1).transpose(1, 3, 0, 2).reshape(1, kw, c_out, -1)
  per_row_NHWKI = _conv(dy_NHWC, rows_1WOK, ((0, 0), (left, right))).reshape(
      n, h_dy, -1, kh, kernel_HWIO.shape[2])
  # dx[h] = sum over kernel rows a of row a's result at dy row h + kh - 1 - a - top.
  return sum(lax.pad(per_row_NHWKI[:, :, :, a], jnp.zeros((), dy_NHWC.dtype),
                     ((0, 0, 0), (top + a - kh + 1, height - h_dy - top - a + kh - 1, 0),
                      (0, 0, 0), (0, 0, 0)))
             for a in range(kh))


def _conv2d_bwd(pads, row_split_up_to, residuals, dy_NHWC):
  x_NHWC, kernel_HWIO, bias_O = residuals
  dx_NHWC = _input_grad(dy_NHWC, kernel_HWIO, pads, x_NHWC.shape[1], row_split_up_to)
  # Kernel gradient: sum over n, h, w of x (shifted by the tap) times dy. As a convolution
  # in the same layout: input channels as the batch, images as the features, dy as the
  # kernel (its H x W as the window); the output's spatial axes are the 3x3 taps.
  x_CHWN = x_NHWC.transpose(3, 1, 2, 0)
  # The bias's gradient, the sum of dy over n, h, w, is the kernel gradient of one more
  # input channel of ones, at the tap that reads every output's own position (its low
  # pad): a few % more of this convolution instead of a reduction of its own over dy,
  # which XLA:CPU runs as a slow reduce-window (TinyNet, batch 128 on one core: 3 ms of
  # a 64 ms step).
  tap = tuple(low for low, _ in pads)
  bias_from_kernel_grad = bias_O is not None and all(
      t < k and out <= size for t, k, out, size in
      zip(tap, kernel_HWIO.shape, dy_NHWC.shape[1:3], x_NHWC.shape[1:3]))
  if bias_from_kernel_grad:
    x_CHWN = jnp.concatenate([x_CHWN, jnp.ones_like(x_CHWN[:1])])
  dkernel_IHWO = _conv(x_CHWN, dy_NHWC.transpose(1, 2, 0, 3), pads)
  dkernel_HWIO = dkernel_IHWO[:x_NHWC.shape[-1]].transpose(1, 2, 0, 3)
  if bias_from_kernel_grad:
    dbias_O = dkernel_IHWO[-1, tap[0], tap[1]]
  elif bias_O is not None:  # pads so wide that no tap reads every output's position
    dbias_O = dy_NHWC.sum(axis=(0, 1, 2))
  else:
    dbias_O = None
  return dx_NHWC, dkernel_HWIO, dbias_O


conv2d.defvjp(_conv2d_fwd, _conv2d_bwd)
