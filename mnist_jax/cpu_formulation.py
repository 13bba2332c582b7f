"""The "cpu" formulation: the models' layers computed the way XLA:CPU runs fastest, with
the variables and numbers (within float rounding) of the standard ones (mnist_jax/layers.py;
tests/formulation_test.py). Its kernels: mnist_jax/conv.py, mnist_jax/batch_norm.py.

What differs from the standard layers, and why (numbers: docs/performance.md):
- convolutions' gradients written out as forward convolutions (XLA:CPU runs autodiff's
  gradient convolutions as slow loop nests inside `lax.scan`), a one-channel input as a
  product of its 3x3 patches, each bias computed with its kernel, forward and backward;
- BatchNorm with a closed-form backward, its per-channel sums partly as vector-matrix
  products, and a max pool that follows it computed before normalising (exact).
On GPUs the standard formulation is the faster one (docs/performance.md "On a GPU").
"""

import dataclasses

import flax.linen as nn
from jax import lax

from mnist_jax import batch_norm, conv, layers


class Conv3x3(nn.Module):
  """A 3x3 convolution at stride 1 plus a bias, with PyTorch's init: the variables and
  numbers of `layers.Standard.conv` (`nn.Conv`), computed by `conv.conv2d`."""
  features: int
  padding: str  # "SAME" or "VALID"
  bias_with_kernel: bool = True
  row_split_up_to: float = conv.ROW_SPLIT_UP_TO

  @nn.compact
  def __call__(self, x_NHWC):
    in_features = x_NHWC.shape[-1]
    kernel = self.param("kernel", layers.torch_kernel_init, (3, 3, in_features, self.features))
    bias = self.param("bias", layers.torch_bias_init(9 * in_features), (self.features,))
    x_NHWC, kernel, bias = nn.dtypes.promote_dtype(x_NHWC, kernel, bias)
    pads = tuple((int(low), int(high)) for low, high in
                 lax.padtype_to_pads(x_NHWC.shape[1:3], (3, 3), (1, 1), self.padding))
    if self.bias_with_kernel:
      return conv.conv2d(x_NHWC, kernel, pads, bias, self.row_split_up_to)
    return conv.conv2d(x_NHWC, kernel, pads, None, self.row_split_up_to) + bias


@dataclasses.dataclass(frozen=True)
class CpuFormulation:
  """The CPU formulation. Each field is one of its choices, the default the one measured
  fastest; the others stay so that the measurement can be repeated by name
  (benchmarks/variants/)."""
  bias_with_kernel: bool = True  # each conv's bias inside its kernel's product and gradient
  row_split_up_to: float = conv.ROW_SPLIT_UP_TO  # conv.ROW_SPLIT_UP_TO; 0: never split rows
  bn_sums_as_products: bool = True  # batch_norm.sum_per_channel; else one reduction each
  pool_before_normalising: bool = True  # batch_norm._signed_pool; else normalise, then pool

  def conv(self, features: int, padding: str, in_features: int, name: str) -> nn.Module:
    del in_features  # Conv3x3 reads it from its input
    return Conv3x3(features, padding, self.bias_with_kernel, self.row_split_up_to, name=name)

  def batch_norm(self, use_running_average: bool, momentum, pool, name: str):
    pool_first = pool if self.pool_before_normalising else None
    norm = batch_norm.BatchNorm(use_running_average, momentum, pool=pool_first,
                                sums_as_products=self.bn_sums_as_products, name=name)
    if pool is None or pool_first is not None:
      return norm
    return lambda x_NHWC, mask_N=None: pool(norm(x_NHWC, mask_N))
