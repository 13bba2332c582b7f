"""Shared fixtures: the real MNIST files beside the project, and optional packages."""

import importlib
import os
import pathlib
import shutil
import sys
import tempfile

import jax
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
# The checkout's package first (over any installed copy), and benchmarks/, scripts/ as packages.
sys.path.insert(0, str(ROOT))
# In-process tests run JAX's default CPU convolutions (the parity tests need their
# precision); the processes tests start (train.py, a plain `import mnist_jax`) choose
# their own, Eigen's (mnist_jax.cpu).
os.environ["MNIST_JAX_FAST_CONVOLUTIONS"] = "0"
from mnist_jax import cli  # pylint: disable=wrong-import-position
del os.environ["MNIST_JAX_FAST_CONVOLUTIONS"]

# One persistent compilation cache for the whole run, in a folder of its own (hermetic:
# nothing from an earlier run or from the user's cache), shared by this process and every
# process a test starts: a program compiled once is loaded by the others.
# (Test workers that this process starts inherit the folder.)
_OWN_CACHE = "PYTEST_XDIST_WORKER" not in os.environ
_CACHE = (tempfile.mkdtemp(prefix="mnist-jax-test-compilation-cache-") if _OWN_CACHE
          else os.environ[cli.CACHE_ENV])
os.environ[cli.CACHE_ENV] = _CACHE
os.environ["JAX_COMPILATION_CACHE_DIR"] = cli.use_compilation_cache(_CACHE)
# Every program, the smallest too: most of the suite's time is XLA compiling (each process
# compiles its own eager operations and jax.random's programs, 0.05-1.5 s each).
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
# No size limit, in every process alike (the folder lives for one run): under a limit, JAX
# lists and stats every entry at each write, and with the suite's thousands of entries that
# made each compilation 4-8x slower (70 ms -> 570 ms for one eager `add`).
os.environ["JAX_COMPILATION_CACHE_MAX_SIZE"] = "-1"
jax.config.update("jax_compilation_cache_max_size", -1)


def pytest_unconfigure(config):
  if _OWN_CACHE:
    shutil.rmtree(_CACHE, ignore_errors=True)


# Where CI and developers keep the real MNIST files; a user passes the same path as --data-dir.
MNIST_DIR = os.environ.get("MNIST_DATA_DIR", str(ROOT.parent / "shared" / "data" / "mnist"))


def normal(seed: int, shape) -> "np.ndarray":
  """Standard normal float32 test inputs. numpy draws them: jax.random's programs take
  0.3-1.5 s each to compile on XLA:CPU, once per shape, which added up to minutes."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  return np.random.default_rng(seed).standard_normal(shape, np.float32)


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


def assert_trees_equal(a, b):
  """Two pytrees of one structure (checked first: `zip` of leaves would stop at the shorter),
  every leaf bitwise equal."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)


def restore_run(workdir, config, formulation="auto"):
  """`(state, progress)` from the latest checkpoint of the run in `workdir`."""
  from mnist_jax import checkpointing, epoch
  template = epoch.abstract_state(config, formulation,
                                  jax.sharding.SingleDeviceSharding(jax.devices()[0]))
  checkpointer = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"))
  try:
    return checkpointer.restore(template)
  finally:
    checkpointer.close()


def assert_events_are_metrics(workdir) -> dict:
  """The run's TensorBoard event files (RUN/tensorboard/), read back with TensorBoard's own
  reader, hold exactly metrics.jsonl's values: every tag, every epoch once, float32 as
  TensorBoard stores them. Returns {run folder: {tag: [(epoch, value)]}}."""
  import json  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=import-outside-toplevel
  root = pathlib.Path(workdir) / "tensorboard"
  found = {}
  for folder in sorted({p.parent for p in root.rglob("events.out.tfevents.*")}):
    events = event_accumulator.EventAccumulator(str(folder), size_guidance={"scalars": 0})
    events.Reload()
    found[str(folder.relative_to(root))] = {
        tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
  with open(pathlib.Path(workdir) / "metrics.jsonl") as f:
    history = [json.loads(line) for line in f]
  names = ("train_loss", "train_accuracy", "test_loss", "test_accuracy", "test_loss_precise_bn",
           "test_accuracy_precise_bn")
  want = {".": {"images_per_second": [], "epoch_seconds": []}}

  def add(folder, tag, epoch, value):
    want.setdefault(folder, {}).setdefault(tag, []).append((epoch, float(np.float32(value))))

  for r in history:
    for key in ("images_per_second", "epoch_seconds"):
      add(".", key, r["epoch"], r[key])
    entries = ([(",".join(f"{k}={v:g}" for k, v in e["setting"].items()), e)
                for e in r["settings"]] if "settings" in r else [(".", r)])
    for folder, entry in entries:
      add(folder, "learning_rate", r["epoch"], entry["learning_rate"])
      for name in names:
        if name in entry:
          add(folder, name.replace("_", "/", 1), r["epoch"], entry[name])
          for seed, value in zip(r.get("seeds", ()), entry.get("per_seed", {}).get(name, ())):
            add(os.path.normpath(os.path.join(folder, f"seed_{seed}")), name.replace("_", "/", 1),
                r["epoch"], value)
  got = {folder: {tag: [(step, float(v)) for step, v in values] for tag, values in tags.items()}
         for folder, tags in found.items()}
  assert got == want, (sorted(got), sorted(want))
  return found
