"""The original's optimizer: Adam under PyTorch's StepLR, stepped once per epoch.

The schedule's values (`learning_rate`, `step_size`, `gamma`) are the optimizer's own,
or given per update as optax extra arguments: a sweep's per-run arrays
(`steps.train_step`'s `hyperparams`).
"""

import jax
import jax.numpy as jnp
import optax


def step_lr(count, steps_per_epoch: int, learning_rate, step_size, gamma) -> jax.Array:
  """PyTorch `StepLR(step_size, gamma)` stepped at the end of every epoch, at optimizer
  step `count`: `learning_rate * gamma ** (count // steps_per_epoch // step_size)`.

  The original keeps the last partial batch, so `steps_per_epoch = ceil(num_train /
  batch_size)`. Integer epoch arithmetic, not `exponential_decay(staircase=True)`: that
  floors `step / transition_steps` in float32, which XLA computes as a multiplication by the
  reciprocal, so at e.g. step 940 of 940 it decays one step late. The power is float32
  multiplications one decay at a time, as `optax.piecewise_constant_schedule` computes it
  (bitwise; tests/optim_test.py). Any argument may be an array: a value per run.
  """
  decays = jnp.asarray(count) // steps_per_epoch // step_size
  rate = jnp.broadcast_to(jnp.asarray(learning_rate, jnp.float32), decays.shape)

  def decay(carry):  # elementwise: counts and values may be arrays
    done, rate = carry
    return done + 1, jnp.where(done < decays, rate * jnp.float32(gamma), rate)
  return jax.lax.while_loop(lambda carry: carry[0] < jnp.max(decays), decay, (0, rate))[1]


def step_lr_schedule(learning_rate: float, steps_per_epoch: int, step_size: int,
                     gamma: float) -> optax.Schedule:
  """`step_lr` of these values as an optax schedule (a function of the step count)."""
  return lambda count: step_lr(count, steps_per_epoch, learning_rate, step_size, gamma)


def scale_by_step_lr(steps_per_epoch: int, learning_rate: float, step_size: int,
                     gamma: float) -> optax.GradientTransformationExtraArgs:
  """Updates times `-step_lr(count)` (the state is `optax.scale_by_schedule`'s). Extra
  arguments of `update` named `learning_rate`, `step_size` or `gamma` replace these values;
  others are ignored, as optax's chains expect."""
  defaults = {"learning_rate": learning_rate, "step_size": step_size, "gamma": gamma}

  def update(updates, state, params=None, **extra_args):
    values = {k: extra_args.get(k, v) for k, v in defaults.items()}
    scale = optax.scale_by_schedule(lambda count: -step_lr(count, steps_per_epoch, **values))
    return scale.update(updates, state, params)
  return optax.GradientTransformationExtraArgs(optax.scale_by_schedule(None).init, update)


def create_optimizer(config, steps_per_epoch: int) -> optax.GradientTransformationExtraArgs:
  """`optax.adam` under StepLR: the same state, the same numbers (tests/optim_test.py)."""
  # PyTorch Adam defaults; optax applies eps outside the sqrt, as PyTorch does.
  return optax.chain(
      optax.scale_by_adam(b1=0.9, b2=0.999, eps=1e-8),
      scale_by_step_lr(steps_per_epoch, config.learning_rate, config.step_size, config.gamma))
