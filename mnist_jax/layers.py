"""The models' layers as PyTorch defines them, in the "standard" formulation: flax's
`nn.Conv` and a plain BatchNorm, differentiated by autodiff and left to XLA. What GPUs and
TPUs run best; mnist_jax/cpu_formulation.py computes the same layers for XLA:CPU.

A formulation is an object with two methods that return flax modules:
  conv(features, padding, in_features, name): a 3x3 convolution at stride 1 plus a bias;
  batch_norm(use_running_average, momentum, pool, name): called as (x_NHWC, mask_N),
    BatchNorm2d, followed by `pool` when one is given.
Both formulations hold the same variables (names, shapes, initialisation), so a checkpoint
made with one loads into the other.
"""

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

# A collection that, when the caller makes it mutable, receives each training-mode
# batch's own mean and (biased) variance per layer: what precise BatchNorm averages.
BATCH_MOMENTS = "batch_moments"

# PyTorch's default init for Conv2d/Linear weights: kaiming_uniform(a=sqrt(5)),
# which works out to U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (variance 1/(3 fan_in)).
torch_kernel_init = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")


def torch_bias_init(fan_in: int):
  """PyTorch's default bias init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
  bound = 1 / math.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def dense(features: int, in_features: int, name: str) -> nn.Dense:
  return nn.Dense(features, name=name, kernel_init=torch_kernel_init,
                  bias_init=torch_bias_init(in_features))


def max_pool_2x2(x_NHWC: jax.Array) -> jax.Array:
  """2x2 max pool with stride 2 (PyTorch `MaxPool2d(2)`: odd edges are dropped).

  Written as reshape + max rather than `nn.max_pool`: XLA:CPU differentiates
  reduce_window through select-and-scatter, ~15x slower than this on CPU, and the
  two agree in value and gradient except at exact ties.
  """
  n, h, w, c = x_NHWC.shape
  x_NHWC = x_NHWC[:, : h // 2 * 2, : w // 2 * 2, :]
  return x_NHWC.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def batch_norm_variables(module: nn.Module, features: int):
  """BatchNorm's variables, as `flax.linen.BatchNorm` names them: params `scale`, `bias`;
  batch_stats `mean`, `var` (PyTorch's weight, bias, running_mean, running_var)."""
  return (module.param("scale", nn.initializers.ones, (features,)),
          module.param("bias", nn.initializers.zeros, (features,)),
          module.variable("batch_stats", "mean", jnp.zeros, (features,)),
          module.variable("batch_stats", "var", jnp.ones, (features,)))


def record_batch_moments(module: nn.Module, momentum, ra_mean, ra_var, mean, var) -> None:
  """A training batch's statistics into the running averages (PyTorch's momentum: the new
  batch's weight) and, for precise BatchNorm, into BATCH_MOMENTS. Not at initialisation."""
  if module.is_initializing():
    return
  module.sow(BATCH_MOMENTS, "mean", mean, reduce_fn=lambda _, new: new)
  module.sow(BATCH_MOMENTS, "var", var, reduce_fn=lambda _, new: new)
  ra_mean.value = (1 - momentum) * ra_mean.value + momentum * lax.stop_gradient(mean)
  ra_var.value = (1 - momentum) * ra_var.value + momentum * lax.stop_gradient(var)


class BatchNorm(nn.Module):
  """PyTorch's BatchNorm2d over NHWC activations: epsilon 1e-5, the two-pass biased variance
  (kept biased in the running average, as Flax keeps it), statistics over the real examples
  only (`mask_N` 0: padding). `momentum` weighs the new batch, as PyTorch's does (Flax's
  weighs the old average: its 0.9 is PyTorch's 0.1); an array too (a sweep's run)."""
  use_running_average: bool
  momentum: float | jax.Array = 0.1
  epsilon: float = 1e-5

  @nn.compact
  def __call__(self, x_NHWC, mask_N=None):
    scale, bias, ra_mean, ra_var = batch_norm_variables(self, x_NHWC.shape[-1])
    if self.use_running_average:
      mean, var = ra_mean.value, ra_var.value
    else:
      if mask_N is None:
        mask_N = jnp.ones(x_NHWC.shape[:1], x_NHWC.dtype)
      weights_N111 = mask_N.astype(x_NHWC.dtype)[:, None, None, None]
      count = jnp.sum(weights_N111) * x_NHWC.shape[1] * x_NHWC.shape[2]
      mean = jnp.sum(x_NHWC * weights_N111, axis=(0, 1, 2)) / count
      var = jnp.sum(jnp.square(x_NHWC - mean) * weights_N111, axis=(0, 1, 2)) / count
      record_batch_moments(self, self.momentum, ra_mean, ra_var, mean, var)
    return (x_NHWC - mean) * (lax.rsqrt(var + self.epsilon) * scale) + bias


@dataclasses.dataclass(frozen=True)
class Standard:
  """The standard formulation (see the module docstring); hashable, as a model's field is."""

  @staticmethod
  def conv(features: int, padding: str, in_features: int, name: str) -> nn.Module:
    return nn.Conv(features, (3, 3), padding=padding, kernel_init=torch_kernel_init,
                   bias_init=torch_bias_init(9 * in_features), name=name)

  @staticmethod
  def batch_norm(use_running_average: bool, momentum, pool, name: str):
    norm = BatchNorm(use_running_average, momentum, name=name)
    return norm if pool is None else lambda x_NHWC, mask_N=None: pool(norm(x_NHWC, mask_N))
