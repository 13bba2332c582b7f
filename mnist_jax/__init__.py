"""mnist-jax: the PyTorch MNIST trainer (TinyNet, Net) as pure, jit-able JAX."""

from mnist_jax.augment import normalize, train_transform
from mnist_jax.config import Config
from mnist_jax.data import DataError, load_mnist
from mnist_jax.models import Net, TinyNet, get_model
from mnist_jax.optim import create_optimizer, step_lr_schedule
from mnist_jax.steps import eval_step, train_step
from mnist_jax.torch_interop import from_torch_state_dict
from mnist_jax.train_state import TrainState, create_train_state
from mnist_jax.trainer import train_and_evaluate

__all__ = [
    "Config", "DataError", "Net", "TinyNet", "TrainState", "create_optimizer",
    "create_train_state", "eval_step", "from_torch_state_dict", "get_model",
    "load_mnist", "normalize", "step_lr_schedule", "train_and_evaluate",
    "train_step", "train_transform",
]
