"""2-D convolution (NHWC input, HWIO kernel, stride 1) with its backward pass written out
as convolutions in that same layout: what XLA:CPU runs with its fast (Eigen) kernels.

Why: XLA:CPU rewrites autodiff's gradient convolutions (kernel "OI", or batch and
feature swapped) into that layout only at a program's top level. Inside a loop body
(`lax.scan` of training steps) it leaves them as they are and runs them as plain loop
nests, many times slower than the same steps one program each (issue #13: 17-25x for
TinyNet; tests/conv_test.py checks the compiled layouts). Written out here, a step is the same fast program inside a loop as
outside one; at the top level the numbers are bitwise those of autodiff on this jaxlib
(tests/conv_test.py checks them against autodiff within rounding). GPUs and TPUs
choose their own layouts either way. A one-channel input (the first layer) goes
forward as a matrix product of its 3x3 patches instead (`_conv_forward` says why).
"""

import functools

import jax
import jax.numpy as jnp
from jax import lax

_NHWC_HWIO = ("NHWC", "HWIO", "NHWC")


def _conv(x_NHWC, kernel_HWIO, pads):
  return lax.conv_general_dilated(x_NHWC, kernel_HWIO, (1, 1), pads,
                                  dimension_numbers=_NHWC_HWIO)


def _conv_forward(x_NHWC, kernel_HWIO, pads):
  if x_NHWC.shape[-1] > 1:
    return _conv(x_NHWC, kernel_HWIO, pads)
  # One input channel (both models' first layer): each output is only 9 products, which
  # Eigen's convolution runs at ~9 GFLOP/s. As one matrix product of the 3x3 patches,
  # TinyNet's conv1 at batch 256 takes 4.2 ms instead of 8.3 on 2 cores
  # (benchmarks/conv_layers.py), with the same sums (a training step's results were
  # bitwise unchanged on this jaxlib; docs/performance.md).
  kh, kw = kernel_HWIO.shape[:2]
  padded_NHW = jnp.pad(x_NHWC[..., 0], ((0, 0), *pads))
  h_out, w_out = padded_NHW.shape[1] - kh + 1, padded_NHW.shape[2] - kw + 1
  patches_NHWK = jnp.stack([padded_NHW[:, i:i + h_out, j:j + w_out]
                            for i in range(kh) for j in range(kw)], axis=-1)
  return patches_NHWK @ kernel_HWIO.reshape(kh * kw, -1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv2d(x_NHWC, kernel_HWIO, pads: tuple[tuple[int, int], ...]):
  """`lax.conv_general_dilated` at stride 1 with explicit (low, high) pads per spatial axis."""
  return _conv_forward(x_NHWC, kernel_HWIO, pads)


def _conv2d_fwd(x_NHWC, kernel_HWIO, pads):
  return _conv_forward(x_NHWC, kernel_HWIO, pads), (x_NHWC, kernel_HWIO)


def _conv2d_bwd(pads, residuals, dy_NHWC):
  x_NHWC, kernel_HWIO = residuals
  # Input gradient: dy correlated with the kernel turned 180 degrees, in and out swapped,
  # padded so that every input position sees every kernel tap ("full" padding).
  full = tuple((k - 1 - low, k - 1 - high) for k, (low, high) in zip(kernel_HWIO.shape, pads))
  dx_NHWC = _conv(dy_NHWC, jnp.flip(kernel_HWIO, (0, 1)).transpose(0, 1, 3, 2), full)
  # Kernel gradient: sum over n, h, w of x (shifted by the tap) times dy. As a convolution
  # in the same layout: input channels as the batch, images as the features, dy as the
  # kernel (its H x W as the window); the output's spatial axes are the 3x3 taps.
  dkernel_IHWO = _conv(x_NHWC.transpose(3, 1, 2, 0), dy_NHWC.transpose(1, 2, 0, 3), pads)
  return dx_NHWC, dkernel_IHWO.transpose(1, 2, 0, 3)


conv2d.defvjp(_conv2d_fwd, _conv2d_bwd)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                         precision=None):
  """`flax.linen.Conv(conv_general_dilated=...)`: `conv2d` for what the models use (NHWC,
  stride 1, no dilation, one group); anything else is refused, not silently changed."""
  del precision  # float32 throughout
  nhwc = lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC_HWIO)
  plain = (tuple(window_strides) == (1, 1) and feature_group_count == 1
           and dimension_numbers in (None, nhwc)
           and all(d is None or tuple(d) == (1, 1) for d in (lhs_dilation, rhs_dilation)))
  if not plain or lhs.ndim != 4:
    raise ValueError("mnist_jax.conv: only 2-D convolutions at stride 1, without dilation "
                     "or groups; use flax's default convolution for others")
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], (1, 1), padding)
  return conv2d(lhs, rhs, tuple((int(low), int(high)) for low, high in padding))
