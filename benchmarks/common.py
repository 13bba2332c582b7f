"""What the benchmark and investigation tools share: the CPU they ran on, train.py's XLA:CPU
settings, and a training run's pieces on the device, built with the library's public
functions as train.py builds them (`mnist_jax.trainer`).

    import common                                        # from a script in benchmarks/
    common.use_train_py_settings(batch_size=256)         # before JAX initialises
    run = common.setup_run("../shared/data/mnist", Config(batch_size=256))
    run.state, run.sums = run.fns.train_steps(1)(run.state, run.sums, run.train, run.order,
                                                 run.keys.augment, run.hyperparams)
"""

import dataclasses
import os
import platform
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mnist_jax import cpu  # pylint: disable=wrong-import-position


def cpu_description() -> str:
  """The CPU's model name, its vector extensions and the core count: every number needs it."""
  name, flags = platform.processor() or platform.machine(), []
  try:
    with open("/proc/cpuinfo") as f:
      info = f.read().splitlines()
    name = next(l.split(":", 1)[1].strip() for l in info if l.startswith("model name"))
    flags = next(l.split(":", 1)[1].split() for l in info if l.startswith("flags"))
  except (OSError, StopIteration):
    pass
  vector = [f for f in flags if f.startswith(("avx", "amx", "fma")) or f in ("sse4_2",)]
  return f"{name} ({' '.join(vector) or 'vector extensions unknown'}), {os.cpu_count()} cores"


def use_train_py_settings(batch_size: int, host_devices: int = cpu.HOST_DEVICES) -> None:
  """train.py's XLA:CPU settings (mnist_jax.cpu); call before JAX initialises. XLA's own
  convolutions instead: MNIST_JAX_FAST_CONVOLUTIONS=0 in the environment."""
  cpu.use_fast_convolutions()
  cpu.use_host_devices(batch_size, host_devices)


@dataclasses.dataclass
class Run:
  """A run's pieces on the device, ready for `fns.train_steps(n)` and `fns.evaluate`."""
  config: object
  mesh: object
  num_train: int
  steps_per_epoch: int
  train: object  # the training split on the device
  test: object
  test_order: object
  keys: object  # epoch.RunKeys, replicated
  hyperparams: object  # epoch.run_hyperparams, replicated
  fns: object  # epoch.EpochFunctions
  state: object
  sums: object
  order: object  # epoch 1's order


def setup_run(data_dir: str, config, mnist=None, mesh=None) -> Run:
  """The state, data and jitted functions of a run of `config` on `mesh` (default: every
  device), as the trainer builds them; `mnist` reuses data already loaded."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  from mnist_jax import epoch, input_pipeline, load_mnist, parallel  # pylint: disable=import-outside-toplevel
  mnist = mnist or load_mnist(data_dir)
  mesh = mesh or parallel.make_mesh()
  replicated = parallel.replicated(mesh)
  num_train = len(mnist["train"].labels)
  steps_per_epoch = input_pipeline.num_batches(num_train, config.batch_size)
  eval_batch_size = epoch.round_up_to_devices(config.eval_batch_size, mesh)
  keys = parallel.replicate(epoch.run_keys(config), mesh)
  fns = epoch.jit_epoch_functions(config, num_train, eval_batch_size, mesh)
  return Run(
      config=config, mesh=mesh, num_train=num_train, steps_per_epoch=steps_per_epoch,
      train=input_pipeline.to_device(mnist["train"], mesh),
      test=input_pipeline.to_device(mnist["test"], mesh),
      test_order=parallel.replicate(input_pipeline.sequential_order(
          len(mnist["test"].labels), eval_batch_size), mesh),
      keys=keys, hyperparams=parallel.replicate(epoch.run_hyperparams(config), mesh), fns=fns,
      state=epoch.init_state(config, keys.init, steps_per_epoch, replicated),
      sums=parallel.replicate(epoch.zero_sums(config.num_runs), mesh),
      order=fns.order(keys.data, parallel.replicate(np.int32(1), mesh)))
