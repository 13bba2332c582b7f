"""mnist-jax: the PyTorch MNIST trainer (TinyNet, Net) as pure, jit-able JAX."""

import importlib

from mnist_jax import cpu

# The CPU convolutions train.py runs, for everyone who imports the steps: an XLA flag, so
# it takes effect if JAX has not started yet (opt out with MNIST_JAX_FAST_CONVOLUTIONS=0;
# mnist_jax/cpu.py says why and what it costs; the README why it is done at import).
cpu.use_fast_convolutions()

# Each public name and the module it lives in, imported when first asked for: `from
# mnist_jax import train_step` works as usual, while the entry points answer --help and
# bad flags before JAX loads (`from mnist_jax import cli, config` alone takes no ~3 s).
_PUBLIC = {
    "normalize": "augment", "train_transform": "augment",
    "Config": "config", "Execution": "config",
    "DataError": "data", "load_mnist": "data",
    "Net": "models", "TinyNet": "models", "get_model": "models",
    "create_optimizer": "optim", "learning_rate_schedule": "optim",
    "eval_step": "steps", "train_step": "steps",
    "from_torch_state_dict": "torch_interop",
    "TrainState": "train_state", "create_train_state": "train_state",
    "train_and_evaluate": "trainer",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
  if name not in _PUBLIC:
    raise AttributeError(f"module 'mnist_jax' has no attribute {name!r}")
  return getattr(importlib.import_module(f"mnist_jax.{_PUBLIC[name]}"), name)


def __dir__():
  return __all__
