"""Many runs as one leading array axis (`Config.num_runs > 1`: many seeds, a sweep's
settings, or both) of everything a run owns: state, running sums, epoch order, keys,
hyperparameters; the dataset is shared. Run `s * num_seeds + k` is setting s of the sweep
with seed `seed+k`: the run that setting and seed give alone. How a function is mapped over
that axis changes speed, not meaning (`SEED_MAPS`; `benchmarks/seeds.py` measures them).

SEED_MAPS: "vmap", one batched program, in which convolutions whose kernels carry the run
axis become grouped convolutions; "unroll", the runs one after another inside the program,
each computed as a single run computes it. (`lax.map`, a loop over the seeds on the device,
is slower than both on CPU and its convolutions round worse there: benchmarks/seeds.py.)
"""

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mnist_jax import optim
from mnist_jax.config import SEED_MAPS, Config


def default_seed_map() -> str:
  # XLA:CPU runs grouped convolutions and convolutions inside loops far slower than
  # plain ones (TinyNet b256, 8 seeds: benchmarks/seeds.py, docs/usage.md "Many seeds"), so the
  # CPU unrolls; GPUs and TPUs batch the runs into one wide program.
  return "unroll" if jax.default_backend() == "cpu" else "vmap"


def over_runs(fn: Callable, in_axes: tuple, num_runs: int, how: str,
              spmd_axis_name: str | None = None) -> Callable:
  """`fn` per run: arguments with in_axes 0 carry the run axis, None are shared.
  `spmd_axis_name`: the mesh axis the run axis is split over (vmap only)."""
  if num_runs == 1:
    return fn  # no run axis at all: a single run is exactly what it always was
  if how == "vmap":  # trailing arguments left out take their defaults, unmapped
    return lambda *args: jax.vmap(fn, in_axes=in_axes[:len(args)],
                                  spmd_axis_name=spmd_axis_name)(*args)
  if how == "unroll":
    return lambda *args: stack([
        fn(*(jax.tree.map(lambda x, k=k: x[k], a) if axis == 0 else a
             for a, axis in zip(args, in_axes))) for k in range(num_runs)])
  raise ValueError(f"unknown seed map {how!r}; choose one of {', '.join(SEED_MAPS)}")


def stack(trees: list):
  """Trees of one structure as one tree with a new leading axis."""
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def seed_values(config: Config) -> list[int]:
  return [config.seed + k for k in range(config.num_seeds)]


def run_seeds(config: Config) -> list[int]:
  """Each run's seed: every setting of the sweep runs with the same seeds."""
  return seed_values(config) * len(config.settings())


def learning_rates(config: Config, epoch: int, steps_per_epoch: int) -> list[float]:
  """Each run's learning rate in (1-based) `epoch`, from its setting's own schedule."""
  count = (epoch - 1) * steps_per_epoch
  rates = [optim.learning_rate_schedule(config.setting(s), steps_per_epoch)(count)
           for s in range(len(config.settings()))]
  return [float(np.float32(rate)) for rate in rates for _ in range(config.num_seeds)]


def run_hyperparams(config: Config, epoch: int, steps_per_epoch: int) -> dict[str, np.ndarray]:
  """Each run's hyperparameters in `epoch` (`steps.train_step`'s `hyperparams`): the
  BatchNorm momentum and, when the sweep varies the schedule, the rate (else the optimizer's
  own schedule gives it, inside the step)."""
  hyperparams = {"bn_momentum": np.asarray(
      [s.get("bn_momentum", config.bn_momentum) for s in config.settings()
       for _ in range(config.num_seeds)], np.float32)}
  if {"learning_rate", "step_size", "gamma"} & {name for name, _ in config.sweep}:
    hyperparams["learning_rate"] = np.asarray(
        learning_rates(config, epoch, steps_per_epoch), np.float32)
  return hyperparams if config.num_runs > 1 else {k: v[0] for k, v in hyperparams.items()}


class RunKeys(NamedTuple):
  init: jax.Array
  data: jax.Array  # with the epoch number: that epoch's order
  augment: jax.Array  # with the step number: that step's augmentation draws


def run_keys(config: Config, sharding=None) -> RunKeys:
  """Every random draw of a run derives from its seed (with a run axis for many runs), placed
  by `sharding`. One program: made op by op, the keys would be four."""
  def derive():
    keys = [RunKeys(*jax.random.split(jax.random.key(s), 3)) for s in run_seeds(config)]
    return keys[0] if config.num_runs == 1 else stack(keys)
  return jax.jit(derive, out_shardings=sharding)()


def loss_and_accuracy(sums) -> tuple[np.ndarray, np.ndarray]:
  """(mean loss, accuracy) per run from metric sums, as float64 arrays (one entry for a
  single run)."""
  sums = jax.device_get(sums)
  count = np.maximum(np.atleast_1d(np.asarray(sums["count"], np.float64)), 1.0)
  return (np.atleast_1d(np.asarray(sums["loss_sum"], np.float64)) / count,
          np.atleast_1d(np.asarray(sums["correct"], np.float64)) / count)
