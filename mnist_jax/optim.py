"""The original's optimizer: Adam under PyTorch's StepLR, stepped once per epoch."""

import optax


def step_lr_schedule(
    learning_rate: float, steps_per_epoch: int, step_size: int, gamma: float
) -> optax.Schedule:
  """PyTorch `StepLR(step_size, gamma)` stepped at the end of every epoch.

  Optimizer step `s` lies in epoch `e = s // steps_per_epoch` and gets
  `learning_rate * gamma ** (e // step_size)`. The original keeps the last partial
  batch, so `steps_per_epoch = ceil(num_train / batch_size)`.
  """
  return optax.exponential_decay(
      learning_rate, transition_steps=step_size * steps_per_epoch,
      decay_rate=gamma, staircase=True)


def create_optimizer(config, steps_per_epoch: int) -> optax.GradientTransformation:
  schedule = step_lr_schedule(
      config.learning_rate, steps_per_epoch, config.step_size, config.gamma)
  # PyTorch Adam defaults; optax.adam applies eps outside the sqrt, as PyTorch does.
  return optax.adam(schedule, b1=0.9, b2=0.999, eps=1e-8)
