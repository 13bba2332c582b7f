"""TinyNet and Net, layer for layer as in the original PyTorch script.

Inputs are NHWC float images `(N, 28, 28, 1)`, outputs are logits `(N, 10)`.
Layer names mirror the original's attributes (`conv1`, `bn1`, `fc1`, ...) so that
`mnist_jax.torch_interop` can map a PyTorch `state_dict` one key to one variable.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from mnist_jax import conv
from mnist_jax.batch_norm import BatchNorm

# PyTorch's default init for Conv2d/Linear weights: kaiming_uniform(a=sqrt(5)),
# which works out to U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (variance 1/(3 fan_in)).
torch_kernel_init = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")


def torch_bias_init(fan_in: int):
  """PyTorch's default bias init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
  bound = 1 / math.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


class Conv3x3(nn.Module):
  """A 3x3 convolution at stride 1 plus a bias, with PyTorch's init: the variables and
  numbers of `nn.Conv(features, (3, 3), padding=padding)`, computed by `conv.conv2d`, whose
  backward pass is fast on CPU inside `lax.scan` too and finds the bias's gradient with
  the kernel's."""
  features: int
  padding: str  # "SAME" or "VALID"

  @nn.compact
  def __call__(self, x_NHWC):
    in_features = x_NHWC.shape[-1]
    kernel = self.param("kernel", torch_kernel_init, (3, 3, in_features, self.features))
    bias = self.param("bias", torch_bias_init(9 * in_features), (self.features,))
    x_NHWC, kernel, bias = nn.dtypes.promote_dtype(x_NHWC, kernel, bias)
    pads = lax.padtype_to_pads(x_NHWC.shape[1:3], (3, 3), (1, 1), self.padding)
    return conv.conv2d(x_NHWC, kernel, tuple((int(low), int(high)) for low, high in pads), bias)


def dense(features: int, in_features: int, name: str) -> nn.Dense:
  return nn.Dense(
      features, name=name,
      kernel_init=torch_kernel_init, bias_init=torch_bias_init(in_features))


def max_pool_2x2(x_NHWC: jax.Array) -> jax.Array:
  """2x2 max pool with stride 2 (PyTorch `MaxPool2d(2)`: odd edges are dropped).

  Written as reshape + max rather than `nn.max_pool`: XLA:CPU differentiates
  reduce_window through select-and-scatter, ~15x slower than this on CPU, and the
  two agree in value and gradient except at exact ties.
  """
  n, h, w, c = x_NHWC.shape
  x_NHWC = x_NHWC[:, : h // 2 * 2, : w // 2 * 2, :]
  return x_NHWC.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


class TinyNet(nn.Module):
  """22,334 parameters: three conv+BN blocks, global average pooling, one linear."""

  @nn.compact
  def __call__(self, x_NHWC, train: bool = False, mask_N=None, bn_momentum=0.1):
    """`bn_momentum`: PyTorch's BatchNorm momentum (a float, or an array: a sweep's)."""
    for i, features in enumerate((20, 28, 64), start=1):
      x_NHWC = Conv3x3(features, "SAME", name=f"conv{i}")(x_NHWC)
      # PyTorch's eps 1e-5; padded examples (mask 0) stay out of the statistics.
      # Layers 1-2 max-pool after the ReLU; BatchNorm pools first, exactly (batch_norm.py).
      x_NHWC = BatchNorm(use_running_average=not train, momentum=bn_momentum,
                         pool=max_pool_2x2 if i < 3 else None, name=f"bn{i}")(x_NHWC, mask_N)
      x_NHWC = nn.relu(x_NHWC)
    x_NC = x_NHWC.mean(axis=(1, 2))
    return dense(10, x_NC.shape[-1], "fc")(x_NC)


class Net(nn.Module):
  """593,200 parameters: four unpadded convs, two linears, no BatchNorm."""

  @nn.compact
  def __call__(self, x_NHWC, train: bool = False, mask_N=None, bn_momentum=None):
    del train, mask_N, bn_momentum  # no BatchNorm: training and evaluation are one function
    conv3x3 = lambda f, x, name: Conv3x3(f, "VALID", name=name)(x)
    x_NHWC = nn.relu(conv3x3(32, x_NHWC, "conv1"))
    x_NHWC = nn.relu(max_pool_2x2(conv3x3(64, x_NHWC, "conv2")))  # pools before its ReLU
    x_NHWC = nn.relu(conv3x3(128, x_NHWC, "conv3"))
    x_NHWC = nn.relu(max_pool_2x2(conv3x3(256, x_NHWC, "conv4")))
    x_NF = x_NHWC.reshape(x_NHWC.shape[0], -1)  # (N, 4*4*256): HWC order, see torch_interop
    x_NF = nn.relu(dense(50, x_NF.shape[-1], "fc1")(x_NF))
    return dense(10, 50, "fc2")(x_NF)


MODELS = {"tiny": TinyNet, "net": Net}


def get_model(name: str) -> nn.Module:
  if name not in MODELS:
    raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
  return MODELS[name]()
