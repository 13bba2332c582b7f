"""Probes into a model's convolutions for the tests, in either formulation: the gradient that
reaches each convolution's output, which is what that convolution's bias gradient sums."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mnist_jax.cpu_formulation import Conv3x3
from tolerance import gamma


def is_conv(module) -> bool:
  """A convolution layer of either formulation (its output: the convolution plus bias)."""
  return isinstance(module, (nn.Conv, Conv3x3))


def apply_with_conv_offsets(model, variables, x_NHWC, offsets: dict, **kwargs):
  """`model.apply` with `offsets[name]` added to convolution `name`'s output. At zero
  offsets it is the same function, and its gradient with respect to an offset is the
  gradient at that convolution's output."""
  def add(next_fun, args, kw, context):
    out = next_fun(*args, **kw)
    if is_conv(context.module) and context.module.name in offsets:
      out = out + offsets[context.module.name]
    return out
  with nn.intercept_methods(add):
    return model.apply(variables, x_NHWC, **kwargs)


def zero_conv_offsets(model, variables, x_NHWC, dtype) -> dict:
  """Zero offsets shaped like each convolution's output in a training-mode pass."""
  shapes = {}
  def record(next_fun, args, kw, context):
    out = next_fun(*args, **kw)
    if is_conv(context.module):
      shapes[context.module.name] = out.shape
    return out
  with nn.intercept_methods(record):
    jax.eval_shape(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]),
                   variables, x_NHWC)
  return {name: jnp.zeros(shape, dtype) for name, shape in shapes.items()}


def bias_gradient_bound(conv_output_grad, unit_ratio: float = 1.0) -> np.ndarray:
  """How far a conv bias's computed gradient may lie from exact, per channel: it is the
  n-term sum of the gradient at the conv's output over images and positions, so it carries
  that sum's rounding, and the summed terms' own rounding added up, as much again."""
  g_out = np.asarray(conv_output_grad, np.float64)
  n = g_out.size // g_out.shape[-1]
  return unit_ratio * 4 * gamma(n) * np.abs(g_out).reshape(n, -1).sum(0)
