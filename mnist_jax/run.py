"""A run's pieces, built in one place: the device mesh, the data on the devices, the keys,
the jitted epoch functions and the initial or restored state. The trainer, the benchmarks
and scripts/ all build runs here, so that what they time or inspect is what train.py runs.

    run = build_run(Config(batch_size=256), Execution(data_dir="../shared/data/mnist"),
                    load_mnist("../shared/data/mnist"))
    state, sums, _ = run.train_epoch(run.state, epoch=1)
    test_loss, test_accuracy = run_axis.loss_and_accuracy(run.evaluate(state))
"""

import dataclasses
from typing import Callable

import jax
import numpy as np
from jax.sharding import Mesh

from mnist_jax import epoch as epoch_lib
from mnist_jax import input_pipeline, parallel, run_axis
from mnist_jax.config import Config, Execution


class RunError(Exception):
  """A run that cannot start as asked; the message says what to do."""


def make_mesh(config: Config, execution: Execution, devices=None) -> Mesh:
  """The run's mesh over `devices` (default: all): RunError when the runs, the devices or
  the batch do not split as the execution asks."""
  devices = jax.devices() if devices is None else devices
  if problem := parallel.check_run_groups(execution.run_groups, config.num_runs, len(devices)):
    raise RunError(problem)
  mesh = parallel.make_mesh(devices, run_groups=execution.run_groups)
  if problem := parallel.check_batch_size(config.batch_size, mesh):
    raise RunError(problem)
  return mesh


def check_data(config: Config, datasets: dict) -> None:
  """RunError when the recipe asks for more than the data holds."""
  num_train = len(input_pipeline.subset(datasets["train"], config.num_train_examples).labels)
  if config.batch_size > num_train:
    raise RunError(f"--batch-size {config.batch_size} is larger than the "
                   f"{num_train} training examples; use at most {num_train}")


@dataclasses.dataclass
class Run:
  """Everything a run's epochs need, on the device. Arguments with a run axis (state, keys,
  sums, hyperparameters) are placed by `parallel.run_sharding(mesh)`."""
  config: Config
  execution: Execution
  mesh: Mesh
  train: input_pipeline.DeviceSplit
  test: input_pipeline.DeviceSplit
  test_order: input_pipeline.EpochOrder
  steps_per_epoch: int
  steps_per_chunk: int
  keys: run_axis.RunKeys
  fns: epoch_lib.EpochFunctions
  state: object  # the initial state, or the restored one
  history: list[dict]  # the restored checkpoint's epoch records ([] for a new run)

  @property
  def num_train(self) -> int:
    return int(self.train.labels.shape[0])

  def _per_run(self, tree):
    return parallel.place(tree, parallel.run_sharding(self.mesh))

  def order(self, epoch: int) -> input_pipeline.EpochOrder:
    """Epoch `epoch`'s (1-based) data order: a function of each run's seed and the epoch."""
    return self.fns.order(self.keys.data, parallel.replicate(np.int32(epoch), self.mesh))

  def hyperparams(self, epoch: int) -> dict:
    return self._per_run(run_axis.run_hyperparams(self.config, epoch, self.steps_per_epoch))

  def zero_sums(self):
    return self._per_run(epoch_lib.zero_sums(self.config.num_runs))

  def train_epoch(self, state, epoch: int, report: Callable[[int], None] = lambda done: None,
                  sums=None, start: int = 0, should_stop: Callable[[], bool] = lambda: False):
    """`(state, metric sums, steps done)` after epoch `epoch`'s steps from `state` (which is
    donated); from `start` steps done with their `sums` (a run stopped mid-epoch), and ended
    early when `should_stop()`. `report(steps_done)`: see `epoch.train_epoch`."""
    order, hyperparams = self.order(epoch), self.hyperparams(epoch)
    sums = self.zero_sums() if sums is None else sums
    # Any implicit host<->device copy inside the loop would be a hidden sync: fail loudly.
    with jax.transfer_guard("disallow"):
      return epoch_lib.train_epoch(
          self.fns.train_steps, state, sums, self.train, order, self.keys.augment, hyperparams,
          steps_per_epoch=self.steps_per_epoch, steps_per_chunk=self.steps_per_chunk,
          report_every_steps=self.execution.progress_every_steps, report=report, start=start,
          should_stop=should_stop)

  def evaluate(self, state):
    """Metric sums over the test split (per run)."""
    return self.fns.evaluate(state, self.test, self.test_order)

  def precise_batch_stats(self, state, epoch: int):
    """Precise BatchNorm statistics over epoch `epoch`'s first batches (`Config.precise_bn`)."""
    return self.fns.precise_batch_stats(state, self.train, self.order(epoch), self.keys.augment)


def build_run(config: Config, execution: Execution, datasets: dict, mesh: Mesh | None = None,
              checkpointer=None) -> Run:
  """The run of `config` executed as `execution` on `mesh` (default: `make_mesh`), from
  MNIST's splits as `data.load_mnist` returns them. With a `checkpointing.Checkpointer`,
  the state and history are its latest checkpoint's (restored into this mesh's sharding,
  whatever mesh wrote it); else the initial state."""
  mesh = make_mesh(config, execution) if mesh is None else mesh
  check_data(config, datasets)
  train_split = input_pipeline.subset(datasets["train"], config.num_train_examples)
  test_split = input_pipeline.subset(datasets["test"], config.num_test_examples)
  num_train = len(train_split.labels)
  steps_per_epoch = input_pipeline.num_batches(num_train, config.batch_size)
  runs = parallel.run_sharding(mesh)  # replicated, unless a runs axis splits the runs
  keys = run_axis.run_keys(config, runs)
  if checkpointer is None:
    state, history = epoch_lib.init_state(config, execution.formulation, keys.init,
                                          steps_per_epoch, runs), []
  else:
    state, progress = checkpointer.restore(
        epoch_lib.abstract_state(config, execution.formulation, runs, steps_per_epoch))
    history = progress["history"]
  eval_batch_size = epoch_lib.round_up_to_devices(
      min(execution.eval_batch_size, len(test_split.labels)), mesh)
  return Run(
      config=config, execution=execution, mesh=mesh,
      # Every device holds the (small) uint8 dataset and gathers its own slice of each batch.
      train=input_pipeline.to_device(train_split, mesh),
      test=input_pipeline.to_device(test_split, mesh),
      test_order=parallel.replicate(
          input_pipeline.sequential_order(len(test_split.labels), eval_batch_size), mesh),
      steps_per_epoch=steps_per_epoch,
      steps_per_chunk=min(execution.steps_per_chunk
                          or epoch_lib.default_steps_per_chunk(steps_per_epoch), steps_per_epoch),
      keys=keys,
      fns=epoch_lib.jit_epoch_functions(config, execution, num_train, eval_batch_size, mesh),
      state=state, history=history)
