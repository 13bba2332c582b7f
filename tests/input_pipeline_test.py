import jax
import numpy as np
import pytest

from mnist_jax import data, input_pipeline


def _split(n):
  images = np.arange(n, dtype=np.uint8).reshape(n, 1, 1, 1) * np.ones((1, 28, 28, 1), np.uint8)
  return input_pipeline.to_device(data.Split(images, np.arange(n, dtype=np.int32)))


def _epoch_labels(split, order, batch_size):
  get = jax.jit(input_pipeline.get_batch, static_argnums=3)
  labels, masks = [], []
  for i in range(order.indices.shape[0] // batch_size):
    batch = get(split, order, i, batch_size)
    assert batch["image"].shape == (batch_size, 28, 28, 1)
    labels.append(np.asarray(batch["label"]))
    masks.append(np.asarray(batch["mask"]))
  return np.concatenate(labels), np.concatenate(masks)


@pytest.mark.parametrize("n, batch_size, steps", [(60_000, 256, 235), (60_000, 512, 118),
                                                  (60_000, 1000, 60), (250, 7, 36)])
def test_steps_per_epoch_keep_the_last_partial_batch(n, batch_size, steps):
  assert input_pipeline.num_batches(n, batch_size) == steps


def test_every_example_exactly_once_per_epoch():
  n, batch_size = 1000, 64  # 16 batches, the last with 40 real examples
  split = _split(n)
  order = input_pipeline.shuffled_order(jax.random.key(0), n, batch_size)
  assert order.indices.shape == (16 * 64,)
  labels, mask = _epoch_labels(split, order, batch_size)
  real = labels[mask == 1]
  assert sorted(real.tolist()) == list(range(n))
  assert mask.sum() == n and np.all(mask[-24:] == 0)


def test_same_key_same_order_and_epochs_differ():
  key = jax.random.key(3)
  order = lambda epoch: input_pipeline.shuffled_order(jax.random.fold_in(key, epoch), 500, 50)
  np.testing.assert_array_equal(order(1).indices, order(1).indices)
  assert not np.array_equal(order(1).indices, order(2).indices)
  assert not np.array_equal(order(1).indices, np.arange(500))


def test_evaluation_covers_the_test_set_once(mnist):
  split = input_pipeline.to_device(mnist["test"])
  order = input_pipeline.sequential_order(10_000, 1000)
  labels, mask = _epoch_labels(split, order, 1000)
  assert mask.sum() == 10_000
  np.testing.assert_array_equal(labels, mnist["test"].labels)


def test_gathered_batch_holds_the_right_images():
  split = _split(100)
  order = input_pipeline.shuffled_order(jax.random.key(1), 100, 32)
  batch = input_pipeline.get_batch(split, order, 2, 32)
  np.testing.assert_array_equal(batch["image"][:, 0, 0, 0], batch["label"])
  np.testing.assert_array_equal(batch["label"], order.indices[64:96])
