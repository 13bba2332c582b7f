import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mnist_jax import (Config, Net, TinyNet, TrainState, create_train_state, eval_step,
                       train_step)
from tolerance import assert_as_accurate, assert_trees_as_accurate, to_float64


def _state(model=None, batch_size=32):
  config = Config(batch_size=batch_size, learning_rate=1e-2)
  return create_train_state(jax.random.key(0), model or TinyNet(), config, steps_per_epoch=10)


def _sgd_state(model=None):
  """Adam's first step is lr * sign(g): float noise in a gradient that is zero in exact
  arithmetic (a conv bias before BatchNorm) becomes a full-size update. Comparing
  steps through SGD compares the gradients themselves."""
  state = _state(model)
  return TrainState.create(apply_fn=state.apply_fn, params=state.params,
                           batch_stats=state.batch_stats, tx=optax.sgd(0.1))


def _batch(mnist, n=32, start=0):
  return {"image": jnp.asarray(mnist["train"].images[start:start + n]),
          "label": jnp.asarray(mnist["train"].labels[start:start + n])}


def _exact(fn, *args):
  """`fn` on `args` in float64: the yardstick of the float32 results (tolerance.py)."""
  with jax.enable_x64(True):
    return jax.device_get(jax.jit(fn)(*to_float64(args)))


def _tree_equal(a, b):
  return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_loss_decreases_on_a_fixed_batch(mnist):
  state, batch = _state(), _batch(mnist)
  step = jax.jit(functools.partial(train_step, augment_images=False))
  losses = []
  for i in range(8):
    state, metrics = step(state, batch, jax.random.key(i))
    losses.append(float(metrics["loss_sum"] / metrics["count"]))
  assert all(b < a for a, b in zip(losses, losses[1:])), losses
  assert losses[-1] < 0.7 * losses[0], losses


@pytest.mark.parametrize("augment_images", [False, True])
def test_jit_and_no_jit_agree(mnist, augment_images):
  state, batch, key = _sgd_state(), _batch(mnist), jax.random.key(3)
  step = functools.partial(train_step, augment_images=augment_images)
  eager = step(state, batch, key)
  jitted = jax.jit(step)(state, batch, key)
  assert_trees_as_accurate(jitted, eager, _exact(step, state, batch, key))


def test_a_step_leaves_its_input_state_usable(mnist):
  """`train_step` is pure and donates nothing (its caller jits it and chooses: epoch.py's jit
  donates, tests/epoch_test.py): the same input state steps again to the same new state."""
  state, batch = _state(), _batch(mnist)
  step = jax.jit(train_step)
  new_state, _ = step(state, batch, jax.random.key(0))
  again, _ = step(state, batch, jax.random.key(0))
  assert _tree_equal(new_state.params, again.params)
  assert not _tree_equal(new_state.params, state.params)
  assert int(new_state.step) == 1 and int(state.step) == 0


@pytest.mark.parametrize("model", [TinyNet(), Net()])
def test_masked_out_example_changes_nothing(mnist, model):
  """Padding the last batch with masked examples is exact: same sums, same update."""
  state = _sgd_state(model)
  real = _batch(mnist, n=24)
  junk = _batch(mnist, n=8, start=100)
  junk["image"] = 255 - junk["image"]
  padded = {"image": jnp.concatenate([real["image"], junk["image"]]),
            "label": jnp.concatenate([real["label"], junk["label"]]),
            "mask": jnp.concatenate([jnp.ones(24), jnp.zeros(8)])}
  step = jax.jit(functools.partial(train_step, augment_images=False))
  ref_state, ref_metrics = step(state, real, jax.random.key(0))
  pad_state, pad_metrics = step(state, padded, jax.random.key(0))
  assert float(pad_metrics["count"]) == 24
  exact_state, exact_metrics = _exact(step, state, real, jax.random.key(0))
  assert_trees_as_accurate(pad_metrics, ref_metrics, exact_metrics, "metrics")
  assert_trees_as_accurate((pad_state.params, pad_state.batch_stats),
                           (ref_state.params, ref_state.batch_stats),
                           (exact_state.params, exact_state.batch_stats), "state")
  ev = jax.jit(eval_step)
  assert_trees_as_accurate(ev(state, padded), ev(state, real), _exact(eval_step, state, real))


def test_eval_step_counts_correct_predictions(mnist):
  state = _state()
  batch = _batch(mnist, n=64)
  metrics = jax.jit(eval_step)(state, batch)
  logits = state.apply_fn({"params": state.params, "batch_stats": state.batch_stats},
                          (batch["image"] / 255.0 - 0.1307) / 0.3081, train=False)
  assert float(metrics["correct"]) == float(jnp.sum(jnp.argmax(logits, -1) == batch["label"]))
  assert float(metrics["count"]) == 64


def test_eval_step_composes_with_vmap(mnist):
  """Pure functions: a researcher can vmap eval_step over several parameter sets."""
  state, batch = _state(), _batch(mnist)
  scaled = jax.tree.map(lambda p: 1.5 * p, state.params)
  stacked = jax.tree.map(lambda *p: jnp.stack(p), state.params, scaled)
  vmapped = jax.vmap(lambda p: eval_step(state.replace(params=p), batch))(stacked)
  for i, params in enumerate((state.params, scaled)):
    one = state.replace(params=params)
    assert_as_accurate(vmapped["loss_sum"][i], eval_step(one, batch)["loss_sum"],
                       _exact(eval_step, one, batch)["loss_sum"])
