"""The training state: params, BatchNorm statistics, optimizer state and step."""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.training import train_state

from mnist_jax import optim


class TrainState(train_state.TrainState):
  """`flax.training.train_state.TrainState` plus the `batch_stats` collection."""
  batch_stats: Any


def create_train_state(
    rng: jax.Array, model: nn.Module, config, steps_per_epoch: int) -> TrainState:
  """The initial state, computed as one compiled program (flax's `model.init` run op by op
  compiles each of its operations: 7.7 s for TinyNet on 2 cores), bitwise the same values
  (tests/epoch_test.py). Inside a caller's jit or vmap, the caller's program computes it."""
  top_level = not isinstance(rng, jax.core.Tracer)  # XLA options are the outermost program's
  return _jitted_create_train_state(top_level)(rng, model, config, steps_per_epoch)


def init_compiler_options() -> dict | None:
  """XLA options for programs that initialise a state. XLA:CPU spends most of compiling
  one in LLVM's optimiser, on the unrolled threefry rounds of each of flax's random draws;
  at LLVM level 1 instead of XLA's default it compiles in about half the time, and the
  program runs once. Level 1 still contracts multiply-adds as the default does, so the
  state is bitwise the same (tests/epoch_test.py); level 0 would change biases' last bits."""
  return {"xla_backend_optimization_level": 1} if jax.default_backend() == "cpu" else None


@functools.cache  # called once JAX runs: the backend is known
def _jitted_create_train_state(top_level: bool):
  return jax.jit(_create_train_state, static_argnums=(1, 2, 3),
                 compiler_options=init_compiler_options() if top_level else None)


def _create_train_state(rng, model, config, steps_per_epoch):
  variables = model.init(rng, jnp.zeros((1, 28, 28, 1), jnp.float32))
  return TrainState.create(
      apply_fn=model.apply,
      params=variables["params"],
      batch_stats=variables.get("batch_stats", {}),
      tx=optim.create_optimizer(config, steps_per_epoch),
  )
