import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import require
from mnist_jax import Config, TinyNet, create_train_state, optim, train_step
from tolerance import ADAM_RTOL, U32


def schedule_rtol(num_decays: int) -> float:
  # lr and each factor gamma rounded to float32 (u each), one rounded product per decay.
  return (2 * num_decays + 2) * U32


def closed_form(lr, steps_per_epoch, step_size, gamma, step):
  return lr * gamma ** ((step // steps_per_epoch) // step_size)


@pytest.mark.parametrize("batch_size", [256, 512, 1000, 7])
@pytest.mark.parametrize("step_size, gamma", [(15, 0.1), (4, 0.5)])
def test_schedule_equals_closed_form_for_40_epochs(batch_size, step_size, gamma):
  steps_per_epoch = math.ceil(60_000 / batch_size)
  schedule = optim.learning_rate_schedule(
      Config(learning_rate=1e-3, step_size=step_size, gamma=gamma, num_epochs=40), steps_per_epoch)
  steps = np.arange(40 * steps_per_epoch)
  got = np.asarray(schedule(jnp.asarray(steps)))
  want = np.array([closed_form(1e-3, steps_per_epoch, step_size, gamma, s) for s in steps])
  np.testing.assert_allclose(got, want, rtol=schedule_rtol(39 // step_size))


@pytest.mark.parametrize("batch_size, step_size, gamma", [(256, 15, 0.1), (7, 4, 0.5)])
def test_schedule_equals_torch_step_lr(batch_size, step_size, gamma):
  torch = require("torch")
  steps_per_epoch = math.ceil(60_000 / batch_size)
  schedule = optim.learning_rate_schedule(
      Config(learning_rate=0.01, step_size=step_size, gamma=gamma, num_epochs=40), steps_per_epoch)
  param = torch.nn.Parameter(torch.zeros(1))
  optimizer = torch.optim.Adam([param], lr=0.01)
  scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=step_size, gamma=gamma)
  step = 0
  for _ in range(40):  # the original: optimizer.step() per batch, scheduler.step() per epoch
    torch_lr = optimizer.param_groups[0]["lr"]
    # Every step of the epoch uses the epoch's rate; check its first, last and a middle one.
    for s in {step, step + steps_per_epoch // 2, step + steps_per_epoch - 1}:
      assert float(schedule(s)) == pytest.approx(torch_lr, rel=schedule_rtol(39 // step_size))
    step += steps_per_epoch
    optimizer.step()  # (no gradient: changes nothing) keeps PyTorch's call order
    scheduler.step()


@pytest.mark.parametrize("batch_size, num_epochs, warmup_fraction", [(256, 3, 0.25), (7, 2, 0.1)])
def test_onecycle_warms_up_linearly_then_falls_linearly_to_zero(batch_size, num_epochs,
                                                               warmup_fraction):
  """The speedrun's schedule: from a tenth of the peak up to it over the first
  `warmup_fraction` of all steps, then down to zero at the run's end, a straight line each."""
  steps_per_epoch = math.ceil(60_000 / batch_size)
  config = Config(learning_rate=0.04, schedule="onecycle", warmup_fraction=warmup_fraction,
                  num_epochs=num_epochs)
  total = num_epochs * steps_per_epoch
  warmup = round(warmup_fraction * total)
  steps = np.arange(total + 1)
  want = np.where(steps < warmup, 0.004 + (0.04 - 0.004) * steps / warmup,
                  0.04 * (total - steps) / (total - warmup))
  got = np.asarray(optim.learning_rate_schedule(config, steps_per_epoch)(jnp.asarray(steps)))
  # float32: the endpoints rounded (u each), then one product and one sum, u each.
  np.testing.assert_allclose(got, want, rtol=4 * U32, atol=0.04 * 4 * U32)
  assert np.argmax(got) == warmup and got[-1] == 0  # the peak after the warm-up; zero at the end


def test_onecycle_is_not_swept_and_its_epochs_are_part_of_the_recipe():
  """A one-cycle rate changes every step, the same for all runs: a sweep of the rate is
  refused; and as its length is the run's, a resume may not change --epochs."""
  with pytest.raises(ValueError, match="--sweep learning_rate: with --schedule onecycle"):
    Config(schedule="onecycle", sweep=(("learning_rate", (0.01, 0.02)),))
  Config(schedule="onecycle", sweep=(("bn_momentum", (0.1, 0.3)),))  # the step takes it
  config = Config(schedule="onecycle", num_epochs=3)
  assert "num_epochs=3 (now 4)" in config.replace(num_epochs=4).resume_problem(config, 3)
  assert Config(num_epochs=4).resume_problem(Config(num_epochs=3), 3) is None  # StepLR may grow


def test_optimizer_is_adam_with_pytorch_defaults():
  tx = optim.create_optimizer(Config(learning_rate=0.1, step_size=1, gamma=0.5, num_epochs=3),
                              steps_per_epoch=2)
  params = jnp.ones(3)
  state = tx.init(params)
  grads = jnp.array([1.0, -2.0, 1e-3])
  updates, state = tx.update(grads, state, params)
  # With a constant gradient the bias-corrected moments are g and g^2 at every step, so
  # each update is -lr * g / (|g| + eps): PyTorch's eps, outside the square root.
  want = -grads / (np.abs(grads) + 1e-8)
  np.testing.assert_allclose(updates, 0.1 * want, rtol=ADAM_RTOL)
  for _ in range(2):  # steps 1 and 2: epoch 0 then epoch 1 (rate halves)
    updates, state = tx.update(grads, state, params)
  np.testing.assert_allclose(updates, 0.05 * want, rtol=ADAM_RTOL)


def test_the_rate_is_optax_piecewise_schedule_in_the_step_and_a_given_rate_replaces_it():
  """One run's rate: `optax.piecewise_constant_schedule` (its unrolled boundaries: the
  compiled step holds no loop; augmentation, which has loops of its own, left out). A sweep
  run's rate, given as the extra argument `learning_rate`, replaces the schedule's."""
  config = Config(learning_rate=0.1, step_size=4, gamma=0.5, num_epochs=40)
  schedule = optim.learning_rate_schedule(config, steps_per_epoch=10)
  want = optax.piecewise_constant_schedule(0.1, {e * 10: 0.5 for e in range(4, 40, 4)})
  counts = jnp.arange(0, 400, 7)
  np.testing.assert_array_equal(schedule(counts), want(counts))  # bitwise: the same function
  state = create_train_state(jax.random.key(0), TinyNet(), config, steps_per_epoch=10)
  batch = {"image": jnp.zeros((8, 28, 28, 1), jnp.uint8), "label": jnp.zeros(8, jnp.int32)}
  hlo = jax.jit(train_step, static_argnames="augment_images").lower(
      state, batch, jax.random.key(1), augment_images=False).as_text()
  assert "while" not in hlo

  tx = optim.create_optimizer(config, steps_per_epoch=10)
  grads = jnp.array([1.0, -2.0])
  opt_state = tx.init(grads)
  for _ in range(45):  # into epoch 5: the schedule's rate is 0.05 now
    own, opt_state = tx.update(grads, opt_state, grads)
  given, _ = tx.update(grads, opt_state, grads, learning_rate=jnp.float32(0.2))
  np.testing.assert_allclose(given, 0.2 / 0.05 * own, rtol=ADAM_RTOL)
