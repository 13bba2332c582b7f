"""Data parallelism over 4 CPU "devices" (XLA_FLAGS in a subprocess, so nothing leaks)."""

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT, restore_run
from mnist_jax import Config, input_pipeline, train_and_evaluate

FOUR_DEVICES = dict(os.environ, PYTHONPATH=str(ROOT),
                    XLA_FLAGS="--xla_force_host_platform_device_count=4")

# Runs in a 4-device process: a few steps of the trainer's own step on a 1-device mesh
# and on a 4-device mesh, from the same state and data. SGD, because Adam's first steps
# are lr * sign(g): a pre-BatchNorm bias's gradient, zero but for rounding, would turn
# summation-order noise into full-size updates.
STEPS_SCRIPT = """
import functools, json, sys
import jax, jax.numpy as jnp, numpy as np, optax
from mnist_jax import Config, TinyNet, TrainState, create_train_state, data, input_pipeline, parallel, trainer

assert jax.device_count() == 4
mnist = data.load_mnist(sys.argv[1])
split = data.Split(mnist["train"].images[:1000], mnist["train"].labels[:1000])
config = Config(batch_size=200)
base = create_train_state(jax.random.key(0), TinyNet(), config, 5)
base = TrainState.create(apply_fn=base.apply_fn, params=base.params,
                         batch_stats=base.batch_stats, tx=optax.sgd(0.05))
results = {}
for n in (1, 4):
  mesh = parallel.make_mesh(jax.devices()[:n])
  rep = parallel.replicated(mesh)
  split_d = input_pipeline.to_device(split, rep)
  order = jax.device_put(input_pipeline.shuffled_order(jax.random.key(1), 1000, 200), rep)
  step = jax.jit(functools.partial(trainer.train_batch, steps_per_epoch=5, batch_size=200,
                                   augment=True, mesh=mesh), in_shardings=rep, out_shardings=rep)
  state, sums = jax.device_put(base, rep), jax.device_put(trainer.zero_sums(), rep)
  for _ in range(5):
    state, sums = step(state, sums, split_d, order, jax.device_put(jax.random.key(2), rep))
  results[n] = (state, sums)
  batch = jax.jit(lambda s, o: parallel.shard_batch(
      input_pipeline.get_batch(s, o, 0, 200), mesh))(split_d, order)
  results[f"shard_shape_{n}"] = [list(s.data.shape) for s in batch["image"].addressable_shards]
  hlo = step.lower(state, sums, split_d, order, jax.random.key(2)).compile().as_text()
  results[f"all_reduce_{n}"] = "all-reduce" in hlo

diff = lambda a, b: max(float(np.abs(np.asarray(x) - np.asarray(y)).max())
                        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
print(json.dumps({
    "params": diff(results[1][0].params, results[4][0].params),
    "batch_stats": diff(results[1][0].batch_stats, results[4][0].batch_stats),
    "loss": abs(float(results[1][1]["loss_sum"]) - float(results[4][1]["loss_sum"]))
            / float(results[1][1]["count"]),
    "moved": diff(base.params, results[4][0].params),
    "shards_1": results["shard_shape_1"], "shards_4": results["shard_shape_4"],
    "all_reduce_4": results["all_reduce_4"],
}))
"""


def test_four_devices_compute_what_one_does(mnist_dir):
  result = subprocess.run([sys.executable, "-c", STEPS_SCRIPT, mnist_dir], env=FOUR_DEVICES,
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr
  out = json.loads(result.stdout.strip().splitlines()[-1])
  assert out["moved"] > 1e-3  # the steps did train
  assert out["params"] <= 1e-5 and out["batch_stats"] <= 1e-5 and out["loss"] <= 1e-5, out
  # The global batch of 200 is split 4 ways: each device holds and computes 50 examples.
  assert out["shards_1"] == [[200, 28, 28, 1]]
  assert out["shards_4"] == [[50, 28, 28, 1]] * 4
  assert out["all_reduce_4"]  # gradients and BatchNorm statistics over the global batch


def _config(mnist_dir, epochs):
  return Config(batch_size=128, num_epochs=epochs, num_train_examples=512,
                data_dir=mnist_dir, learning_rate=0.01)


RUN_SCRIPT = """
import sys
from mnist_jax import Config, train_and_evaluate
config = Config(batch_size=128, num_epochs=int(sys.argv[2]), num_train_examples=512,
                data_dir=sys.argv[1], learning_rate=0.01)
train_and_evaluate(config, sys.argv[3], resume=sys.argv[4] == "resume", show_progress=False)
"""


def _run_on_four(mnist_dir, epochs, workdir, resume):
  result = subprocess.run(
      [sys.executable, "-c", RUN_SCRIPT, mnist_dir, str(epochs), str(workdir),
       "resume" if resume else "new"],
      env=FOUR_DEVICES, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr


def _restore(workdir, mnist_dir, epochs):
  return restore_run(workdir, _config(mnist_dir, epochs), input_pipeline.num_batches(512, 128))


def test_checkpoints_move_between_device_counts(tmp_path, mnist_dir):
  # Written on 4 devices, restored and continued on 1.
  _run_on_four(mnist_dir, 1, tmp_path / "four", resume=False)
  state, progress = _restore(tmp_path / "four", mnist_dir, 1)
  assert int(state.step) == 4 and len(progress["history"]) == 1
  resumed = train_and_evaluate(_config(mnist_dir, 2), str(tmp_path / "four"), resume=True,
                               show_progress=False)
  assert int(resumed.step) == 8

  # Written on 1 device, continued on 4: the same run as above with the device counts
  # swapped, so the two must agree in what they learn (Adam amplifies summation-order
  # rounding in the pre-BatchNorm biases, see above, so not bit for bit).
  train_and_evaluate(_config(mnist_dir, 1), str(tmp_path / "one"), show_progress=False)
  _run_on_four(mnist_dir, 2, tmp_path / "one", resume=True)
  on_four, progress = _restore(tmp_path / "one", mnist_dir, 2)
  assert int(on_four.step) == 8 and len(progress["history"]) == 2
  other = [json.loads(line) for line in
           (tmp_path / "four" / "metrics.jsonl").read_text().splitlines()]
  for key, tolerance in (("train_loss", 1e-3), ("test_accuracy", 0.01)):
    assert progress["history"][1][key] == pytest.approx(other[1][key], abs=tolerance)
