"""The two formulations of the models (mnist_jax/models.py): the same variables, and the same
numbers within float rounding, in a forward pass, every gradient, the BatchNorm statistics
and five Adam steps; a run trained with one answers the same with the other; "auto" picks
per backend. Float64 (the standard formulation) is the yardstick of rounding (tolerance.py).
"""

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import ROOT, assert_trees_equal
from mnist_jax import (Config, TrainState, augment, create_optimizer, inference, models, steps,
                       train_step)
from mnist_jax.cpu_formulation import CpuFormulation
from mnist_jax.layers import Standard
from probes import apply_with_conv_offsets, bias_gradient_bound, zero_conv_offsets
from tolerance import (EPS32, FLOAT64_PER_FLOAT32, SAME_ROUNDING_FACTOR, assert_as_accurate,
                       assert_within, max_abs)

# TinyNet in float32; Net in float64 on both sides, as tests/torch_parity_test.py says why
# (float32 rounding flips its ReLU and max-pool choices).
CASES = [("tiny", jnp.float32), ("net", jnp.float64)]
ADAM_STEPS, LR = 5, 1e-3
ADAM_EPS = 1e-8  # optim.create_optimizer's (PyTorch's)


def test_auto_is_cpu_on_the_cpu_and_names_resolve():
  assert jax.default_backend() == "cpu"
  assert models.formulation_layers("auto") == CpuFormulation()
  assert models.formulation_layers("standard") == Standard()
  assert models.formulation_layers(CpuFormulation(row_split_up_to=0.0)).row_split_up_to == 0.0
  with pytest.raises(ValueError, match="unknown formulation 'gpu'"):
    models.formulation_layers("gpu")


def _cast(tree, dtype):
  return jax.tree.map(lambda v: jnp.asarray(v, dtype), tree)


def _first_step(name, formulation, dtype, variables, images, labels):
  """What a formulation computes from `variables`: eval logits, then at those weights the
  training loss, every gradient, the gradient at each conv's output and the BatchNorm
  statistics after the step."""
  model = models.get_model(name, formulation)
  variables = _cast(variables, dtype)
  x_NHWC = jnp.asarray(augment.normalize(images), dtype)
  eval_logits = model.apply(variables, x_NHWC, train=False)

  def loss_fn(params, conv_offsets):
    logits, updates = apply_with_conv_offsets(model, {**variables, "params": params}, x_NHWC,
                                              conv_offsets, train=True, mutable=["batch_stats"])
    sums = steps.metric_sums(logits, labels, jnp.ones(len(labels), dtype))
    return sums["loss_sum"] / sums["count"], updates.get("batch_stats", {})

  (loss, batch_stats), (grads, conv_output_grads) = jax.jit(jax.value_and_grad(
      loss_fn, argnums=(0, 1), has_aux=True))(
          variables["params"], zero_conv_offsets(model, variables, x_NHWC, dtype))
  return jax.device_get({"eval_logits": eval_logits, "loss": loss, "grads": grads,
                         "batch_stats": batch_stats}), conv_output_grads


def _adam_steps(name, formulation, variables, images, labels):
  """The params and BatchNorm statistics after ADAM_STEPS of `train_step`, in float64."""
  model = models.get_model(name, formulation)
  variables = _cast(variables, jnp.float64)
  # A conv bias before BatchNorm has a gradient of exactly zero, but for rounding, which Adam
  # turns into full-size updates (lr * sign): each computation's biases, and the running means
  # that take them in, would go their own ways. Given its exact zero, Adam leaves it be.
  before_batch_norm = {layer: {k: name == "tiny" and layer.startswith("conv") and k == "bias"
                               for k in leaves} for layer, leaves in variables["params"].items()}
  tx = optax.chain(optax.masked(optax.set_to_zero(), before_batch_norm),
                   create_optimizer(Config(model=name, learning_rate=LR), steps_per_epoch=1))
  state = TrainState.create(apply_fn=model.apply, params=variables["params"],
                            batch_stats=variables.get("batch_stats", {}), tx=tx)
  step = jax.jit(train_step, static_argnames="augment_images")
  for _ in range(ADAM_STEPS):
    state, _ = step(state, {"image": images, "label": labels}, jax.random.key(0),
                    augment_images=False)
  return jax.device_get({"adam_params": state.params, "adam_batch_stats": state.batch_stats})


def _x64(dtype):
  return jax.enable_x64(True) if dtype == jnp.float64 else contextlib.nullcontext()


@pytest.mark.parametrize("name, dtype", CASES)
def test_both_formulations_hold_the_same_variables_and_compute_the_same_numbers(
    mnist, name, dtype):
  """The variables, bitwise (names, shapes, initialisation: a checkpoint of one loads into the
  other); forward, loss, gradients and statistics in `dtype`; ADAM_STEPS Adam steps in float64
  on both sides (see below). The standard formulation is the reference: float32 and float64."""
  x = jnp.zeros((1, 28, 28, 1))
  init = {f: models.get_model(name, f).init(jax.random.key(1), x) for f in ("standard", "cpu")}
  assert_trees_equal(init["standard"], init["cpu"])
  variables = init["standard"]
  images, labels = mnist["train"].images[:8], jnp.asarray(mnist["train"].labels[:8])
  reference, _ = _first_step(name, "standard", jnp.float32, variables, images, labels)
  with _x64(dtype):
    got, conv_output_grads = _first_step(name, "cpu", dtype, variables, images, labels)
  with jax.enable_x64(True):
    exact, _ = _first_step(name, "standard", jnp.float64, variables, images, labels)
    exact.update(_adam_steps(name, "standard", variables, images, labels))
    got.update(_adam_steps(name, "cpu", variables, images, labels))
  leaves = lambda tree: dict(jax.tree_util.tree_flatten_with_path(tree)[0])
  reference, exact = leaves(reference), leaves(exact)
  for path, value in leaves(got).items():
    where, kind = jax.tree_util.keystr(path), path[0].key
    value_dtype = jnp.float64 if kind.startswith("adam") else dtype
    assert np.asarray(value).dtype == value_dtype, where  # float64 is float64, not cast
    unit_ratio = FLOAT64_PER_FLOAT32 if value_dtype == jnp.float64 else 1.0
    layer = path[1].key if len(path) > 1 else ""
    if kind == "grads" and layer.startswith("conv") and path[-1].key == "bias":
      # An n-term sum of the gradient at the conv's output: its rounding is derived
      # (probes.bias_gradient_bound); TinyNet's, before BatchNorm, is zero but for it.
      error = np.abs(np.asarray(value, np.float64) - np.asarray(exact[path], np.float64))
      assert np.all(error <= bias_gradient_bound(conv_output_grads[layer], unit_ratio)), where
    elif kind.startswith("adam"):
      # Adam's update lr * m/(sqrt(v) + eps) moves by at most lr/eps per unit of a gradient
      # component (near zero, where that is 1e5: rounding is all its gradient has). So the
      # steps may carry the gradients' rounding that far: in float32 that bound would be
      # loose, in float64 it is ~1e-11 of weights ~0.1. The statistics follow the weights.
      grads = [p for p in exact if p[0].key == "grads"]
      grad_tolerance = FLOAT64_PER_FLOAT32 * max(
          SAME_ROUNDING_FACTOR * max_abs(reference[p] - exact[p]) + 4 * EPS32 * max_abs(exact[p])
          for p in grads)
      assert_within(value, exact[path], ADAM_STEPS * LR / ADAM_EPS * grad_tolerance
                    + FLOAT64_PER_FLOAT32 * 4 * EPS32 * max_abs(exact[path]), where)
    else:
      assert_as_accurate(value, reference[path], exact[path], where, unit_ratio)


def test_a_run_trained_with_cpu_answers_the_same_with_standard(mnist):
  """results/ (8 seeds, trained with the CPU formulation): the ensemble's digits on 500 test
  images are the same either way, wherever rounding could not tip them: the exact top two
  probabilities lie further apart than float32's error (float64 the yardstick)."""
  images = mnist["test"].images[:500]
  probs = {f: inference.predictor(inference.load_run(str(ROOT / "results"), formulation=f))(images)
           for f in ("cpu", "standard")}
  with jax.enable_x64(True):
    model = inference.load_run(str(ROOT / "results"), formulation="standard")
    exact = np.asarray(jax.jit(inference.probabilities, static_argnums=2)(
        jax.tree.map(lambda v: jnp.asarray(v, jnp.float64) if jnp.issubdtype(v.dtype, jnp.floating)
                     else v, model.state), images, model.config.num_seeds), np.float64)
  error = max(np.abs(p.astype(np.float64) - exact).max() for p in probs.values())
  top2 = np.sort(exact, axis=-1)[:, -2:]
  decided = top2[:, 1] - top2[:, 0] > 2 * error
  assert decided.mean() > 0.99  # the check covers nearly every image
  digits = {f: p.argmax(-1) for f, p in probs.items()}
  np.testing.assert_array_equal(digits["cpu"][decided], digits["standard"][decided])
  assert (digits["cpu"] == mnist["test"].labels[:500]).mean() > 0.97
