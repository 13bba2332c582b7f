"""The original's optimizer: Adam under PyTorch's StepLR stepped once per epoch, the rate
defined by `optax.piecewise_constant_schedule`; or under a one-cycle schedule per step (the
speedrun's: `Config.schedule`).

A sweep's runs differ in their schedules. Each run's schedule is evaluated where its values
are concrete, on the host once per epoch (StepLR is constant within an epoch), and the step
gets that rate as an optax extra argument (`steps.train_step`'s `hyperparams`). A one-cycle
schedule, which changes every step, is the optimizer's own, the same for all runs.
"""

import optax


# "onecycle" warms up from this fraction of the peak rate.
WARMUP_START_FACTOR = 0.1


def learning_rate_schedule(config, steps_per_epoch: int) -> optax.Schedule:
  """The rate at a step count: `config.schedule`'s, "step" or "onecycle".

  "onecycle": linear from `WARMUP_START_FACTOR * learning_rate` up to `learning_rate` over
  the first `warmup_fraction` of the run's steps, then linear down to zero at its last step.

  "step": PyTorch `StepLR(step_size, gamma)` stepped at the end of every epoch, for the config's
  `num_epochs`: `learning_rate * gamma ** (epoch // step_size)` for a step count in
  0-based epoch `epoch`. The original keeps the last partial batch, so `steps_per_epoch =
  ceil(num_train / batch_size)`. Integer boundaries, compared exactly (a float floor of
  `count / transition_steps` would decay one step late: `exponential_decay(staircase=True)`)."""
  if config.schedule == "onecycle":
    total = config.num_epochs * steps_per_epoch
    warmup = round(config.warmup_fraction * total)
    return optax.join_schedules(
        [optax.linear_schedule(WARMUP_START_FACTOR * config.learning_rate, config.learning_rate,
                               warmup),
         optax.linear_schedule(config.learning_rate, 0.0, total - warmup)], [warmup])
  boundaries = range(config.step_size, config.num_epochs, config.step_size)
  return optax.piecewise_constant_schedule(
      config.learning_rate, {epoch * steps_per_epoch: config.gamma for epoch in boundaries})


def scale_by_learning_rate(schedule: optax.Schedule) -> optax.GradientTransformationExtraArgs:
  """Updates times `-schedule(count)`: `optax.scale_by_learning_rate`'s state and numbers.
  An extra argument `learning_rate` of `update` (a sweep run's rate now) replaces the
  schedule's value; other extra arguments are ignored, as optax's chains expect."""
  def update(updates, state, params=None, *, learning_rate=None, **extra_args):
    del extra_args
    rate = schedule if learning_rate is None else lambda count: learning_rate
    return optax.scale_by_schedule(lambda count: -rate(count)).update(updates, state, params)
  return optax.GradientTransformationExtraArgs(optax.scale_by_schedule(schedule).init, update)


def create_optimizer(config, steps_per_epoch: int) -> optax.GradientTransformationExtraArgs:
  """`optax.adam` under `learning_rate_schedule`: the same state, the same numbers
  (tests/optim_test.py)."""
  # PyTorch Adam defaults; optax applies eps outside the sqrt, as PyTorch does.
  return optax.chain(optax.scale_by_adam(b1=0.9, b2=0.999, eps=1e-8),
                     scale_by_learning_rate(learning_rate_schedule(config, steps_per_epoch)))
