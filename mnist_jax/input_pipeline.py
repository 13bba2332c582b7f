"""Batching on the device: the dataset is uploaded once, batches are gathered there.

Every epoch has `ceil(N / batch_size)` steps of one static shape: the last batch is
padded with mask 0, so the original's short last batch costs no recompilation and
is weighed exactly (losses and BatchNorm statistics skip padded examples).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mnist_jax import data as data_lib
from mnist_jax import parallel


class DeviceSplit(NamedTuple):
  images: jax.Array  # (N, 28, 28, 1) uint8
  labels: jax.Array  # (N,) int32


class EpochOrder(NamedTuple):
  """Which examples fill each slot of an epoch's batches."""
  indices: jax.Array  # (steps * batch_size,) int32 into the split
  mask: jax.Array  # (steps * batch_size,) float32: 0.0 on padding


def to_device(split: data_lib.Split, mesh=None) -> DeviceSplit:
  """The whole split on every device of the mesh (default: all devices); it is small,
  47 MB of uint8 for MNIST."""
  mesh = parallel.make_mesh() if mesh is None else mesh
  return DeviceSplit(*parallel.replicate((split.images, split.labels), mesh))


def num_batches(num_examples: int, batch_size: int) -> int:
  return -(-num_examples // batch_size)


def _padded(indices, num_examples: int, batch_size: int, xp=jnp) -> EpochOrder:
  """`xp`: jax.numpy inside jit, numpy on the host (where jax.numpy would be programs)."""
  pad = num_batches(num_examples, batch_size) * batch_size - num_examples
  return EpochOrder(
      xp.concatenate([indices.astype(xp.int32), xp.zeros(pad, xp.int32)]),
      xp.concatenate([xp.ones(num_examples, xp.float32), xp.zeros(pad, xp.float32)]))


def shuffled_order(key: jax.Array, num_examples: int, batch_size: int) -> EpochOrder:
  """A fresh permutation of the examples: pass `fold_in(data_key, epoch)`."""
  return _padded(jax.random.permutation(key, num_examples), num_examples, batch_size)


def sequential_order(num_examples: int, batch_size: int) -> EpochOrder:
  """Every example once, in order (evaluation), as host arrays."""
  return _padded(np.arange(num_examples), num_examples, batch_size, xp=np)


def get_batch(split: DeviceSplit, order: EpochOrder, batch_index, batch_size: int):
  """Batch `batch_index` of an epoch, gathered on the device (jit-able)."""
  start = batch_index * batch_size
  indices_B = jax.lax.dynamic_slice_in_dim(order.indices, start, batch_size)
  return {
      "image": split.images[indices_B],
      "label": split.labels[indices_B],
      "mask": jax.lax.dynamic_slice_in_dim(order.mask, start, batch_size),
  }


def subset(split: data_lib.Split, num_examples: int | None) -> data_lib.Split:
  """The first `num_examples` examples (all when None): for quick runs and tests."""
  if num_examples is None:
    return split
  return data_lib.Split(np.asarray(split.images[:num_examples]),
                        np.asarray(split.labels[:num_examples]))
