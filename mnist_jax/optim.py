"""The original's optimizer: Adam under PyTorch's StepLR, stepped once per epoch."""

import optax


def step_lr_schedule(
    learning_rate: float, steps_per_epoch: int, step_size: int, gamma: float,
    num_epochs: int) -> optax.Schedule:
  """PyTorch `StepLR(step_size, gamma)` stepped at the end of every epoch.

  Optimizer step `s` lies in epoch `e = s // steps_per_epoch` and gets
  `learning_rate * gamma ** (e // step_size)`. The original keeps the last partial
  batch, so `steps_per_epoch = ceil(num_train / batch_size)`.

  Integer step boundaries, not `exponential_decay(staircase=True)`: that floors
  `step / transition_steps` in float32, which XLA computes as a multiplication by
  the reciprocal, so at e.g. step 940 of 940 it decays one step late.
  """
  boundaries = {epoch * steps_per_epoch: gamma
                for epoch in range(step_size, num_epochs, step_size)}
  return optax.piecewise_constant_schedule(learning_rate, boundaries)


def create_optimizer(config, steps_per_epoch: int) -> optax.GradientTransformation:
  schedule = step_lr_schedule(
      config.learning_rate, steps_per_epoch, config.step_size, config.gamma,
      config.num_epochs)
  # PyTorch Adam defaults; optax.adam applies eps outside the sqrt, as PyTorch does.
  return optax.adam(schedule, b1=0.9, b2=0.999, eps=1e-8)
