"""TinyNet and Net, layer for layer as in the original PyTorch script.

Inputs are NHWC float images `(N, 28, 28, 1)`, outputs are logits `(N, 10)`.
Layer names mirror the original's attributes (`conv1`, `bn1`, `fc1`, ...) so that
`mnist_jax.torch_interop` can map a PyTorch `state_dict` one key to one variable.

`formulation` chooses how the convolutions and BatchNorm are computed, never what: the same
variables, the same numbers within float rounding (tests/formulation_test.py):
"standard" (flax's own layers, mnist_jax/layers.py), "cpu" (written for XLA:CPU,
mnist_jax/cpu_formulation.py), or "auto": "cpu" on the CPU backend, else "standard".
"""

import flax.linen as nn
import jax

from mnist_jax import config as config_lib
from mnist_jax import cpu_formulation, layers
from mnist_jax.layers import dense, max_pool_2x2


def formulation_layers(formulation):
  """The layers of a formulation: a name of `config.FORMULATIONS`, or a formulation object
  (`layers.Standard()`, `cpu_formulation.CpuFormulation(...)`) as it is."""
  if formulation == "auto":
    formulation = "cpu" if jax.default_backend() == "cpu" else "standard"
  if formulation == "standard":
    return layers.Standard()
  if formulation == "cpu":
    return cpu_formulation.CpuFormulation()
  if isinstance(formulation, str):
    raise ValueError(f"unknown formulation {formulation!r}; choose one of "
                     f"{', '.join(config_lib.FORMULATIONS)}")
  return formulation


class TinyNet(nn.Module):
  """22,334 parameters: three conv+BN blocks, global average pooling, one linear."""
  formulation: object = "auto"

  @nn.compact
  def __call__(self, x_NHWC, train: bool = False, mask_N=None, bn_momentum=0.1):
    """`mask_N`: 0 for padded examples, left out of BatchNorm's statistics. `bn_momentum`:
    PyTorch's BatchNorm momentum (a float, or an array: a sweep's)."""
    f = formulation_layers(self.formulation)
    for i, features in enumerate((20, 28, 64), start=1):
      x_NHWC = f.conv(features, "SAME", x_NHWC.shape[-1], name=f"conv{i}")(x_NHWC)
      # PyTorch: max_pool2d(relu(bn(x)), 2) in blocks 1-2. Max pooling commutes with the
      # ReLU, so the pool goes with BatchNorm (the CPU formulation pools before normalising).
      pool = max_pool_2x2 if i < 3 else None
      x_NHWC = f.batch_norm(not train, bn_momentum, pool, name=f"bn{i}")(x_NHWC, mask_N)
      x_NHWC = nn.relu(x_NHWC)
    x_NC = x_NHWC.mean(axis=(1, 2))  # adaptive_avg_pool2d(x, 1)
    return dense(10, x_NC.shape[-1], "fc")(x_NC)


class Net(nn.Module):
  """593,200 parameters: four unpadded convs, two linears, no BatchNorm."""
  formulation: object = "auto"

  @nn.compact
  def __call__(self, x_NHWC, train: bool = False, mask_N=None, bn_momentum=None):
    del train, mask_N, bn_momentum  # no BatchNorm: training and evaluation are one function
    f = formulation_layers(self.formulation)

    def conv(features, x_NHWC, name):
      return f.conv(features, "VALID", x_NHWC.shape[-1], name=name)(x_NHWC)
    x_NHWC = nn.relu(conv(32, x_NHWC, "conv1"))
    x_NHWC = nn.relu(max_pool_2x2(conv(64, x_NHWC, "conv2")))  # pools before its ReLU
    x_NHWC = nn.relu(conv(128, x_NHWC, "conv3"))
    x_NHWC = nn.relu(max_pool_2x2(conv(256, x_NHWC, "conv4")))
    x_NF = x_NHWC.reshape(x_NHWC.shape[0], -1)  # (N, 4*4*256): HWC order, see torch_interop
    x_NF = nn.relu(dense(50, x_NF.shape[-1], "fc1")(x_NF))
    return dense(10, 50, "fc2")(x_NF)


_MODELS = dict(zip(config_lib.MODELS, (TinyNet, Net)))


def get_model(name: str, formulation="auto") -> nn.Module:
  if name not in _MODELS:
    raise ValueError(f"unknown model {name!r}; choose one of {', '.join(config_lib.MODELS)}")
  return _MODELS[name](formulation=formulation)
