"""Shared fixtures: the real MNIST files beside the project, and optional packages."""

import importlib
import os
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # train.py and configs/ live at the top level
# In-process tests run JAX's default CPU convolutions (the parity tests need their
# precision); tests of train.py run its Eigen convolutions (mnist_jax.cpu).

# Where CI and developers keep the real MNIST files; a user passes the same path as --data-dir.
MNIST_DIR = os.environ.get("MNIST_DATA_DIR", str(ROOT.parent / "shared" / "data" / "mnist"))


def require(module: str, required_in_ci: bool = True):
  """Import `module`; skip without it, except under CI (CI=true) when CI installs it."""
  try:
    return importlib.import_module(module)
  except ImportError:
    if required_in_ci and os.environ.get("CI"):
      pytest.fail(f"{module} is required in CI (requirements-test.txt)")
    pytest.skip(f"{module} is not installed")


@pytest.fixture(scope="session")
def mnist_dir() -> str:
  if not os.path.isfile(os.path.join(MNIST_DIR, "train-images-idx3-ubyte.gz")):
    pytest.fail(f"real MNIST not found in {MNIST_DIR}; set MNIST_DATA_DIR to a folder "
                "with the four IDX files")
  return MNIST_DIR


@pytest.fixture(scope="session")
def mnist(mnist_dir):
  from mnist_jax import data
  return data.load_mnist(mnist_dir)


def restore_run(workdir, config, steps_per_epoch):
  """`(state, progress)` from the latest checkpoint of the TinyNet run in `workdir`."""
  import jax
  from mnist_jax import TinyNet, checkpointing, create_train_state
  template = create_train_state(jax.random.key(0), TinyNet(), config, steps_per_epoch)
  checkpointer = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"))
  try:
    return checkpointer.restore(template)
  finally:
    checkpointer.close()
