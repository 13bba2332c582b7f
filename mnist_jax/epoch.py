"""What runs on the device each epoch: the training steps, the test pass and precise
BatchNorm statistics, jitted for the device mesh, for one run or for many at once (a leading
run axis: mnist_jax/run_axis.py).
"""

import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mnist_jax import augment, input_pipeline, models, parallel, run_axis, steps, train_state
from mnist_jax.config import Config, Execution
from mnist_jax.layers import BATCH_MOMENTS


def default_steps_per_chunk(steps_per_epoch: int) -> int:
  """Training steps per device program (`Config.steps_per_chunk`), per backend.

  A GPU or TPU runs the whole epoch as one program: TinyNet's steps are far too small to
  fill one, and launching each from the host would cost more than it computes. On CPU
  a step is long beside its dispatch (~0.1 s for TinyNet), and every chunk length is one
  more compilation: one step per program (benchmarks/benchmark.py --steps-per-chunk
  measures others; docs/performance.md).
  """
  return steps_per_epoch if jax.default_backend() != "cpu" else 1


def chunk_lengths(steps_per_epoch: int, steps_per_chunk: int) -> list[int]:
  """An epoch's steps in chunks of `steps_per_chunk`, the last one shorter if need be."""
  full, rest = divmod(steps_per_epoch, steps_per_chunk)
  return [steps_per_chunk] * full + ([rest] if rest else [])


def _init_fn(config: Config, formulation, steps_per_epoch: int) -> Callable:
  """init_key -> the run's initial state (a leading run axis for many runs)."""
  init = functools.partial(train_state.create_train_state,
                           model=models.get_model(config.model, formulation),
                           config=config, steps_per_epoch=steps_per_epoch)
  # Random draws are elementwise in the key: vmapped they give each seed its own bits.
  return init if config.num_runs == 1 else jax.vmap(init)


def init_state(config: Config, formulation, init_key, steps_per_epoch: int, sharding=None):
  """A run's initial state, computed as one compiled program placed by `sharding` (op by
  op, flax's initialisation of 8 seeds took 11 s on 2 cores: issue #22). `formulation`:
  the model's (`models.formulation_layers`), which the state's `apply_fn` keeps."""
  return _jitted_init(config, formulation, steps_per_epoch, sharding)(init_key)


@functools.cache  # traced and compiled once per (config, sharding), not at every call
def _jitted_init(config: Config, formulation, steps_per_epoch: int, sharding):
  return jax.jit(_init_fn(config, formulation, steps_per_epoch), out_shardings=sharding,
                 compiler_options=train_state.init_compiler_options())


def abstract_state(config: Config, formulation, sharding, steps_per_epoch: int = 1):
  """The run's state as `jax.ShapeDtypeStruct`s placed by `sharding`: a checkpoint's
  restore template, traced (`jax.eval_shape`) with nothing computed. Neither the
  schedule's length nor the formulation changes a shape: any give the same template."""
  shapes = jax.eval_shape(
      lambda: _init_fn(config, formulation, steps_per_epoch)(run_axis.run_keys(config).init))
  return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding),
                      shapes)


def zero_sums(num_runs: int = 1) -> steps.Metrics:
  """Host zeros (`Run.zero_sums` places them)."""
  shape = () if num_runs == 1 else (num_runs,)
  return {k: np.zeros(shape, np.float32) for k in ("loss_sum", "correct", "count")}


def _add(a: steps.Metrics, b: steps.Metrics) -> steps.Metrics:
  return jax.tree.map(jnp.add, a, b)


def train_batch(state, sums, split, order, augment_key, hyperparams=None, *,
                steps_per_epoch: int, batch_size: int, augment: bool, mesh=None):
  """The next step of the epoch: everything it needs is already on the device.

  The batch position and the augmentation key follow from `state.step`, so the
  host sends nothing per step and a resumed run draws the same randomness. With a
  mesh, each device gathers and computes its own slice of the batch. `hyperparams`:
  the run's (`run_axis.run_hyperparams`); None: the optimizer's and the model's own.
  """
  batch = parallel.shard_batch(
      input_pipeline.get_batch(split, order, state.step % steps_per_epoch, batch_size), mesh)
  key = jax.random.fold_in(augment_key, state.step)
  state, metrics = steps.train_step(state, batch, key, augment_images=augment,
                                    hyperparams=hyperparams)
  return state, _add(sums, metrics)


def repeat_steps(train_batch_fn: Callable, num_steps: int) -> Callable:
  """`num_steps` consecutive calls of `train_batch_fn` (`train_batch` with its options
  bound) as one loop on the device (`lax.scan`): one dispatch, no host round trip.
  `train_step` stays the whole step: the loop is built around it."""
  if num_steps == 1:
    return train_batch_fn

  def train_steps(state, sums, split, order, augment_key, hyperparams=None):
    def step(carry, _):
      return train_batch_fn(*carry, split, order, augment_key, hyperparams), None
    return jax.lax.scan(step, (state, sums), None, length=num_steps)[0]
  return train_steps


# XLA:CPU with several host devices can deadlock when many multi-device programs are
# queued at once: an all-reduce waits for the other device's thread, which sits behind the
# queue (seen with ~235 TinyNet steps queued on 2 devices, not with 30). The epoch loop
# waits for the device at least this often.
MAX_QUEUED_PROGRAMS = 20


def train_epoch(train_steps: Callable, state, sums, split, order, augment_key,
                hyperparams=None, *, steps_per_epoch: int, steps_per_chunk: int,
                report_every_steps: int, report: Callable[[int], None] = lambda steps_done: None,
                start: int = 0, should_stop: Callable[[], bool] = lambda: False):
  """An epoch's steps from the host: `train_steps(num_steps)` (EpochFunctions.train_steps)
  per chunk, from `start` steps done (a run resumed in the middle of the epoch). Waits for
  the device and calls `report(steps_done)` after the first chunk (compiled and run: the end
  of the warm-up), whenever another `report_every_steps` steps are done, and at the end;
  nothing is fetched per step. After each chunk, `should_stop()` may end the epoch early.
  Returns `(state, sums, steps_done)`."""
  done, queued = start, 0
  for i, num_steps in enumerate(chunk_lengths(steps_per_epoch - start, steps_per_chunk)):
    state, sums = train_steps(num_steps)(state, sums, split, order, augment_key, hyperparams)
    done, queued = done + num_steps, queued + 1
    stop = should_stop()
    if (done // report_every_steps > (done - num_steps) // report_every_steps
        or i == 0 or done == steps_per_epoch or queued == MAX_QUEUED_PROGRAMS or stop):
      sums["count"].block_until_ready()
      queued = 0
      report(done)
    if stop:
      break
  return state, sums, done


def evaluate(state, split, order, *, batch_size: int, mesh=None) -> steps.Metrics:
  """Metric sums over a whole split, every example exactly once."""
  def batch_sums(i):
    batch = parallel.shard_batch(input_pipeline.get_batch(split, order, i, batch_size), mesh)
    return steps.eval_step(state, batch)
  # Started from the first batch's sums, so they keep the state's float type.
  return jax.lax.fori_loop(1, order.indices.shape[0] // batch_size,
                           lambda i, sums: _add(sums, batch_sums(i)), batch_sums(0))


# Augmented precise-BN draws use augment_key folded with this number, which no step
# count reaches, so they never repeat a training step's draws.
_PRECISE_BN_STREAM = 2 ** 32 - 1


def precise_batch_stats(state, split, order, augment_key, *, batch_size: int,
                        num_batches: int, augment_images: bool, mesh=None):
  """BatchNorm population statistics with the weights fixed ("precise BN": Wu & Johnson,
  "Rethinking 'Batch' in BatchNorm", 2021): per channel, the mean and the biased
  variance over all images of the first `num_batches` full batches of `order`, exactly
  (the variance adds the spread of the batch means to the mean batch variance).

  Returns a `batch_stats` tree: evaluate with `state.replace(batch_stats=...)`.
  The running statistics of a training step never enter a training-mode forward pass,
  so computing these changes nothing in training.
  """
  stream = jax.random.fold_in(augment_key, _PRECISE_BN_STREAM)

  def batch_moments(i):
    batch = parallel.shard_batch(input_pipeline.get_batch(split, order, i, batch_size), mesh)
    if augment_images:
      images_NHWC = augment.train_transform(jax.random.fold_in(stream, i), batch["image"])
    else:
      images_NHWC = augment.normalize(batch["image"])
    _, captured = state.apply_fn({"params": state.params, "batch_stats": state.batch_stats},
                                 images_NHWC, train=True, mask_N=batch["mask"],
                                 mutable=["batch_stats", BATCH_MOMENTS])
    return captured[BATCH_MOMENTS]

  moments = jax.lax.map(batch_moments, jnp.arange(num_batches))  # leaves (K, C)

  def population(layer):
    mean = layer["mean"].mean(axis=0)
    return {"mean": mean,
            "var": layer["var"].mean(axis=0) + jnp.square(layer["mean"] - mean).mean(axis=0)}
  return {name: population(layer) for name, layer in moments.items()}


class EpochFunctions(NamedTuple):
  """The jitted functions an epoch runs; each takes and returns the run axis, if any."""
  order: Callable  # (data_key, epoch) -> EpochOrder
  # num_steps -> jitted (state, sums, split, order, augment_key, hyperparams=None) ->
  # (state, sums): the next num_steps steps (compiled once per num_steps).
  train_steps: Callable
  evaluate: Callable  # (state, split, order) -> sums
  precise_batch_stats: Callable | None  # (state, split, order, augment_key) -> batch_stats


def round_up_to_devices(batch_size: int, mesh) -> int:
  n = parallel.data_devices(mesh)
  return -(-batch_size // n) * n


def precise_bn_batches(config: Config, num_train: int) -> int:
  """How many full training batches precise BN uses."""
  return max(1, min(config.precise_bn_batches, num_train // config.batch_size))


def jit_epoch_functions(config: Config, execution: Execution, num_train: int,
                        eval_batch_size: int, mesh) -> EpochFunctions:
  """The functions the loop runs, jitted for the mesh, the state and running sums donated.
  benchmarks/benchmark.py times these same functions. On a mesh with a `runs` axis, every
  argument with a run axis is split over it (`parallel.run_sharding`) and must be given."""
  replicated = parallel.replicated(mesh)
  steps_per_epoch = input_pipeline.num_batches(num_train, config.batch_size)
  runs_axis = parallel.runs_axis(mesh)
  # Runs split over devices are one batched program over that axis, whatever the backend.
  n = config.num_runs
  how = "vmap" if runs_axis else execution.seed_map or run_axis.default_seed_map()

  def jit(fn, in_axes, **kwargs):
    if runs_axis is None:
      return jax.jit(fn, in_shardings=replicated, out_shardings=replicated, **kwargs)
    runs = parallel.run_sharding(mesh)
    return jax.jit(fn, in_shardings=tuple(runs if axis == 0 else replicated for axis in in_axes),
                   out_shardings=runs, **kwargs)

  def mapped(fn, in_axes):
    return jit(run_axis.over_runs(fn, in_axes, n, how, runs_axis), in_axes)

  def order(data_key, epoch):
    return input_pipeline.shuffled_order(jax.random.fold_in(data_key, epoch), num_train,
                                         config.batch_size)
  train = functools.partial(train_batch, steps_per_epoch=steps_per_epoch,
                            batch_size=config.batch_size, augment=config.augment, mesh=mesh)
  test = functools.partial(evaluate, batch_size=eval_batch_size, mesh=mesh)
  precise = functools.partial(
      precise_batch_stats, batch_size=config.batch_size, mesh=mesh,
      num_batches=precise_bn_batches(config, num_train),
      augment_images=config.precise_bn_augment)
  train_axes = (0, 0, None, 0, 0, 0)
  train = run_axis.over_runs(train, train_axes, n, how, runs_axis)
  return EpochFunctions(
      order=mapped(order, (0, None)),
      train_steps=functools.cache(lambda num_steps: jit(
          repeat_steps(train, num_steps), train_axes, donate_argnums=(0, 1))),
      evaluate=mapped(test, (0, None, None)),
      precise_batch_stats=mapped(precise, (0, None, 0, 0)) if config.precise_bn else None)
