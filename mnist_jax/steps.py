"""Pure train and eval steps. Nothing here is jitted: callers jit, vmap or grad them.

A batch is a dict of
  image: (N, 28, 28, 1) raw pixels 0-255 (uint8, or float holding the same values),
  label: (N,) int class indices,
  mask:  (N,) 1.0 for real examples, 0.0 for padding (optional; default all ones).
Metrics are sums over the real examples (`loss_sum`, `correct`, `count`), so that
batches of any size, padded or not, add up to exact epoch totals.
"""

import jax
import jax.numpy as jnp
import optax

from mnist_jax import augment

Metrics = dict[str, jax.Array]


def _mask(batch) -> jax.Array:
  return batch.get("mask", jnp.ones(batch["label"].shape, jnp.float32))


def metric_sums(logits_NC, labels_N, mask_N) -> Metrics:
  # Per-example cross-entropy from log-softmax: torch.nn.CrossEntropyLoss without the mean.
  losses_N = optax.softmax_cross_entropy_with_integer_labels(logits_NC, labels_N)
  correct_N = (jnp.argmax(logits_NC, axis=-1) == labels_N).astype(jnp.float32)
  return {
      "loss_sum": jnp.sum(losses_N * mask_N),
      "correct": jnp.sum(correct_N * mask_N),
      "count": jnp.sum(mask_N),
  }


def train_step(state, batch, rng: jax.Array, augment_images: bool = True,
               hyperparams: dict | None = None):
  """One Adam step on the mean cross-entropy of the real examples in `batch`.

  `rng` drives the original's random train transform (crop+resize, rotation);
  with `augment_images=False` images are only normalised. `hyperparams`: this step's
  `learning_rate`, in place of the optimizer's own schedule's value
  (`optim.create_optimizer`), and the model's BatchNorm momentum `bn_momentum` (PyTorch's
  0.1); scalars, or under `jax.vmap` one per run: a sweep (`run_axis.run_hyperparams`).
  Returns `(new_state, metrics)`; the input state is left as it was.
  """
  hyperparams = hyperparams or {}
  model_args = {"bn_momentum": hyperparams["bn_momentum"]} if "bn_momentum" in hyperparams else {}
  mask_N = _mask(batch)
  if augment_images:
    images_NHWC = augment.train_transform(rng, batch["image"])
  else:
    images_NHWC = augment.normalize(batch["image"])

  def loss_fn(params):
    logits_NC, updates = state.apply_fn(
        {"params": params, "batch_stats": state.batch_stats},
        images_NHWC, train=True, mask_N=mask_N, mutable=["batch_stats"], **model_args)
    sums = metric_sums(logits_NC, batch["label"], mask_N)
    # The mean over real examples: PyTorch's loss on a short last batch.
    return sums["loss_sum"] / jnp.maximum(sums["count"], 1.0), (sums, updates)

  grads, (metrics, updates) = jax.grad(loss_fn, has_aux=True)(state.params)
  # What `state.apply_gradients` does, with the step's hyperparameters for the optimizer
  # (optax extra arguments: a transformation ignores those it does not take).
  param_updates, opt_state = state.tx.update(grads, state.opt_state, state.params,
                                             **hyperparams)
  state = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, param_updates),
                        opt_state=opt_state,
                        batch_stats=updates.get("batch_stats", state.batch_stats))
  return state, metrics


def eval_step(state, batch) -> Metrics:
  """Metric sums with BatchNorm running statistics (PyTorch's `model.eval()`)."""
  logits_NC = state.apply_fn(
      {"params": state.params, "batch_stats": state.batch_stats},
      augment.normalize(batch["image"]), train=False)
  return metric_sums(logits_NC, batch["label"], _mask(batch))
