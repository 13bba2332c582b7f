"""What the benchmark and investigation tools share: the CPU they ran on, train.py's XLA:CPU
settings, and a run built by the library's own run builder (`mnist_jax.run.build_run`), so
that what they time is what train.py runs. Run the tools from the repository root as modules:

    python -m benchmarks.ab_steps --data-dir ../shared/data/mnist --variants ...

    from benchmarks from benchmarks import common
    common.use_train_py_settings(batch_size=256)         # before JAX initialises
    steps = common.Stepper(common.build("../shared/data/mnist", Config(batch_size=256)))
    steps(10)                                            # 10 training steps, waited for
"""

import os
import platform

from mnist_jax import cpu


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


def build(data_dir: str, config, execution=None, mnist=None, mesh=None):
  """`run.build_run` of `config` (`execution`: default Execution()) on the MNIST files in
  `data_dir`; `mnist` reuses data already loaded."""
  from mnist_jax import Execution, load_mnist, run  # pylint: disable=import-outside-toplevel
  return run.build_run(config, execution or Execution(), mnist or load_mnist(data_dir), mesh)


class Stepper:
  """Training steps of a run's first epoch from its initial state, one program each as
  train.py runs them on CPU: `stepper(n)` runs n steps and waits for them."""

  def __init__(self, run):
    self.run, self.state, self.sums = run, run.state, run.zero_sums()
    self.order, self.hyperparams = run.order(1), run.hyperparams(1)

  def __call__(self, num_steps: int) -> None:
    import jax  # pylint: disable=import-outside-toplevel
    from mnist_jax import epoch  # pylint: disable=import-outside-toplevel
    step = self.run.fns.train_steps(1)
    for i in range(num_steps):
      self.state, self.sums = step(self.state, self.sums, self.run.train, self.order,
                                   self.run.keys.augment, self.hyperparams)
      if (i + 1) % epoch.MAX_QUEUED_PROGRAMS == 0:
        jax.block_until_ready(self.sums)
    jax.block_until_ready(self.sums)
