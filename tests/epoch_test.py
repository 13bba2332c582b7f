"""The device side of an epoch: many seeds as one array axis, and precise BatchNorm."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import ROOT, assert_trees_equal
from tolerance import assert_as_accurate, assert_trees_as_accurate, to_float64
from mnist_jax import (Config, Execution, TinyNet, augment, create_train_state, data, epoch,
                       input_pipeline, run_axis)

# In a process with 4 CPU devices: 4 steps (batch 64) of 3 seeds (seed 5, 6, 7) trained together,
# each seed map on one device and the default map on 4 devices; and a sweep, a 2x2 grid
# (learning rate x BatchNorm momentum) with 2 seeds (8 runs), vmapped on one device and on a
# 2x2 mesh of 4 (2 groups of runs, each run's batch split over 2 devices); against each run
# trained alone on one device, in float32 and in float64
# (the yardstick of rounding). Run k must be the run its seed (and setting) gives alone: the
# same initialisation, data order, augmentation draws and hyperparameters, so that only
# float rounding (other kernels for a vmapped convolution, another summation order) tells
# them apart. SGD, because Adam's first
# steps are lr * sign(g): a pre-BatchNorm bias's gradient, zero but for rounding, would
# turn summation-order noise into full-size updates (tests/parallel_test.py).
RUN_AXIS_SCRIPT = """
import functools, json, sys
import jax
jax.config.update("jax_enable_x64", True)  # for the float64 yardstick; the rest stays float32
import jax.numpy as jnp, numpy as np
import optax
from mnist_jax import Config, Execution, data, epoch, input_pipeline, optim, parallel, run_axis
from mnist_jax.config import SEED_MAPS

mnist = data.load_mnist(sys.argv[1])
split = data.Split(mnist["train"].images[:256], mnist["train"].labels[:256])
test = data.Split(mnist["test"].images[:250], mnist["test"].labels[:250])
seeds = Config(batch_size=64, seed=5, num_seeds=3, learning_rate=0.05)
grid = seeds.replace(num_seeds=2, sweep=(("learning_rate", (0.05, 0.1)),
                                         ("bn_momentum", (0.1, 0.5))))

# SGD; the runs' learning rates come as hyperparameters (a sweep's from the trainer's own
# run_hyperparams; a run alone is given its rate here). One object: the optimizer is part of
# the state's structure, which a jitted function is compiled for.
SGD = optim.scale_by_learning_rate(optax.constant_schedule(0.05))

@functools.cache  # jitted once for all runs alone: seeds and hyperparameters are arguments
def functions(program, execution, devices):
  mesh = parallel.make_mesh(jax.devices()[:devices], execution.run_groups)
  return mesh, epoch.jit_epoch_functions(program, execution, 256, 250, mesh)

def train(config, devices, dtype=jnp.float32, execution=Execution()):
  program = config.replace(seed=0, learning_rate=0.05, bn_momentum=0.1) if config.num_runs == 1 else config
  mesh, fns = functions(program, execution, devices)
  keys = run_axis.run_keys(config)
  state = epoch.init_state(program, execution.formulation, keys.init, 4)
  cast = lambda tree: jax.tree.map(
      lambda v: jnp.asarray(v, dtype) if jnp.issubdtype(v.dtype, jnp.floating) else v, tree)
  init = jax.vmap(SGD.init) if config.num_runs > 1 else SGD.init  # a step count per run
  state = state.replace(params=cast(state.params), batch_stats=cast(state.batch_stats), tx=SGD,
                        opt_state=init(state.params))
  split_d = input_pipeline.to_device(split, mesh)
  hyperparams = run_axis.run_hyperparams(config, 1, 4)
  if config.num_runs == 1:
    hyperparams["learning_rate"] = np.float32(config.learning_rate)
  state, keys, hyperparams, sums = parallel.place(
      (state, keys, cast(hyperparams), epoch.zero_sums(config.num_runs)),
      parallel.run_sharding(mesh))
  order = fns.order(keys.data, parallel.replicate(np.int32(1), mesh))
  for _ in range(4):
    state, sums = fns.train_steps(1)(state, sums, split_d, order, keys.augment, hyperparams)
  test_sums = fns.evaluate(state, input_pipeline.to_device(test, mesh),
                           parallel.replicate(input_pipeline.sequential_order(250, 250), mesh))
  return jax.device_get((state.params, state.batch_stats, sums["loss_sum"],
                         test_sums["loss_sum"]))

def alone(config):  # each run of the run axis trained alone, in float32 and float64
  return [[train(config.setting(s).replace(seed=seed, num_seeds=1), 1, dtype)
           for dtype in (jnp.float32, jnp.float64)]
          for s in range(len(config.settings())) for seed in run_axis.seed_values(config)]

results = {
    "seeds": {"alone": alone(seeds),
              "together": {**{(how, 1): train(seeds, 1, execution=Execution(seed_map=how))
                              for how in SEED_MAPS},
                           (run_axis.default_seed_map(), 4): train(seeds, 4)}},
    "sweep": {"alone": alone(grid),
              "together": {("vmap", 1): train(grid, 1, execution=Execution(seed_map="vmap")),
                           ("vmap", "2x2"): train(grid, 4, execution=Execution(run_groups=2))}},
}
np.save(sys.argv[2], results, allow_pickle=True)
"""


@pytest.fixture(scope="module")
def runs_together(mnist_dir, tmp_path_factory):
  out = tmp_path_factory.mktemp("run-axis") / "runs.npy"
  env = dict(os.environ, PYTHONPATH=str(ROOT),
             XLA_FLAGS="--xla_force_host_platform_device_count=4")
  result = subprocess.run([sys.executable, "-c", RUN_AXIS_SCRIPT, mnist_dir, str(out)],
                          env=env, capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  return np.load(out, allow_pickle=True).item()


def _assert_each_run_is_the_run_alone(alone, together, what_runs):
  for (how, devices), (params, batch_stats, loss_sums, test_sums) in together.items():
    for k, (run, ((ref_params, ref_stats, ref_loss, ref_test),
                  (exact_params, exact_stats, exact_loss, exact_test))) in enumerate(
                      zip(what_runs, alone)):
      run_k = lambda tree, k=k: jax.tree.map(lambda x: x[k], tree)
      what = f"{how} on {devices} device(s), {run}: "
      assert_trees_as_accurate(run_k(params), ref_params, exact_params, what + "params")
      assert_trees_as_accurate(run_k(batch_stats), ref_stats, exact_stats, what + "batch_stats")
      assert_as_accurate(loss_sums[k], ref_loss, exact_loss, what + "train loss sum")
      assert_as_accurate(test_sums[k], ref_test, exact_test, what + "test loss sum")


@pytest.mark.slow
def test_seed_k_of_many_is_the_run_its_seed_gives_alone(runs_together):
  alone, together = runs_together["seeds"]["alone"], runs_together["seeds"]["together"]
  assert set(together) == {("vmap", 1), ("unroll", 1), ("unroll", 4)}
  moved = np.abs(alone[0][0][0]["fc"]["kernel"] - alone[1][0][0]["fc"]["kernel"]).max()
  assert moved > 1e-3  # the seeds differ
  _assert_each_run_is_the_run_alone(alone, together, ["seed 5", "seed 6", "seed 7"])


@pytest.mark.slow
def test_each_run_of_a_sweep_is_that_setting_and_seed_alone(runs_together):
  """2x2 grid x 2 seeds: run s*2+k is setting s (learning rate outer, momentum inner) with
  seed 5+k, vmapped on one device, and on a 2x2 mesh of 4 devices (runs x data)."""
  alone, together = runs_together["sweep"]["alone"], runs_together["sweep"]["together"]
  assert set(together) == {("vmap", 1), ("vmap", "2x2")}
  runs = [f"lr {lr} momentum {m} seed {seed}"
          for lr in (0.05, 0.1) for m in (0.1, 0.5) for seed in (5, 6)]
  _assert_each_run_is_the_run_alone(alone, together, runs)
  fc = lambda run: alone[run][0][0]["fc"]["kernel"]
  stats = lambda run: alone[run][0][1]["bn3"]["mean"]
  # The settings differ: the rate moves the weights, the momentum only the running statistics.
  assert np.abs(fc(0) - fc(4)).max() > 1e-3
  assert np.abs(fc(0) - fc(2)).max() == 0 and np.abs(stats(0) - stats(2)).max() > 1e-3


def test_the_compiled_initialisation_is_flax_init_op_by_op():
  """`create_train_state` and `init_state` compile the initialisation into one program: the
  same random draws and arithmetic as flax's init run op by op (jax.random's functions are
  compiled either way), so bitwise the same variables; with many seeds, seed k's state is
  its key's alone; and the structure is `abstract_state`'s, with nothing computed."""
  config = Config(num_seeds=2)
  keys = run_axis.run_keys(config)
  one_seed = lambda k: jax.tree.map(lambda x: x[k], keys.init)
  compiled = epoch.init_state(config, "auto", keys.init, steps_per_epoch=5)
  created = create_train_state(one_seed(1), TinyNet(), config, steps_per_epoch=5)
  alone = epoch.init_state(config.replace(num_seeds=1), "auto", one_seed(1), steps_per_epoch=5)
  op_by_op = TinyNet().init(one_seed(1), np.zeros((1, 28, 28, 1), np.float32))  # not jitted
  assert_trees_equal(op_by_op, {"batch_stats": created.batch_stats, "params": created.params})
  arrays = lambda state: (state.params, state.batch_stats, state.opt_state, state.step)
  assert_trees_equal(arrays(created), arrays(alone))
  assert_trees_equal(arrays(created), jax.tree.map(lambda x: x[1], arrays(compiled)))
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  abstract = epoch.abstract_state(config, "auto", sharding)
  assert jax.tree.structure(arrays(abstract)) == jax.tree.structure(arrays(compiled))
  for a, x in zip(jax.tree.leaves(arrays(abstract)), jax.tree.leaves(arrays(compiled))):
    assert (a.shape, a.dtype, a.sharding) == (x.shape, x.dtype, sharding)


def _batch_norm_inputs(state, images_BHWC):
  """What each BatchNorm layer normalises in a training-mode pass: conv i feeds bn i."""
  _, captured = state.apply_fn(
      {"params": state.params, "batch_stats": state.batch_stats}, augment.normalize(images_BHWC),
      train=True, mutable=["batch_stats", "intermediates"],
      capture_intermediates=lambda module, _: module.name in ("conv1", "conv2", "conv3"))
  return {f"bn{i}": captured["intermediates"][f"conv{i}"]["__call__"][0] for i in (1, 2, 3)}


def test_precise_batch_stats_are_the_statistics_of_those_images(mnist):
  """Four batches of 128: per layer, the mean and biased variance over all 512 images of
  what that layer normalised (each batch through the training-mode pass), computed
  directly from those activations; float64 the yardstick of rounding."""
  images = mnist["train"].images[:512]
  split = input_pipeline.to_device(data.Split(images, mnist["train"].labels[:512]))
  state = create_train_state(jax.random.key(3), TinyNet(), Config(), steps_per_epoch=1)
  got = jax.jit(epoch.precise_batch_stats,
                static_argnames=("batch_size", "num_batches", "augment_images"))(
      state, split, input_pipeline.sequential_order(512, 128), jax.random.key(0),
      batch_size=128, num_batches=4, augment_images=False)

  def direct(state):
    inputs = [jax.jit(_batch_norm_inputs)(state, images[i:i + 128]) for i in range(0, 512, 128)]
    return {layer: {"mean": np.mean(x, axis=(0, 1, 2)), "var": np.var(x, axis=(0, 1, 2))}
            for layer in inputs[0]
            for x in [np.concatenate([np.asarray(b[layer], np.float64) for b in inputs])]}
  reference = direct(state)
  with jax.enable_x64(True):
    exact = direct(to_float64(state))
  assert set(got) == {"bn1", "bn2", "bn3"}
  assert_trees_as_accurate(got, reference, exact, "precise statistics ")
  # Not the running averages, which after no training step are still 0 and 1.
  assert np.abs(got["bn2"]["var"] - 1).max() > 0.1


@pytest.fixture(scope="module")
def first_steps(mnist):
  """The pieces of a TinyNet run (batch 128, 5 steps an epoch), its epoch functions jitted
  once for the tests below."""
  from mnist_jax import parallel  # pylint: disable=import-outside-toplevel
  config = Config(batch_size=128)
  split = input_pipeline.to_device(
      data.Split(mnist["train"].images[:640], mnist["train"].labels[:640]))
  keys = run_axis.run_keys(config)
  fns = epoch.jit_epoch_functions(config, Execution(), 640, 1000,
                                  parallel.make_mesh(jax.devices()[:1]))
  return config, split, keys, fns, fns.order(keys.data, np.int32(1))


def _sgd_start(first_steps, dtype):
  """The initial state with SGD in `dtype`, and zero running sums of that type."""
  import optax  # pylint: disable=import-outside-toplevel
  config, _, keys, _, _ = first_steps
  state = epoch.init_state(config, "auto", keys.init, steps_per_epoch=5)
  sgd = optax.sgd(0.05)
  cast = lambda tree: jax.tree.map(lambda v: np.asarray(v, dtype), tree)
  state = state.replace(params=cast(state.params), batch_stats=cast(state.batch_stats), tx=sgd,
                        opt_state=sgd.init(cast(state.params)))
  return state, cast(epoch.zero_sums())  # the loop carries the sums: one float type


def test_the_epoch_step_donates_the_state_and_the_running_sums(first_steps):
  """The jitted step train.py runs (EpochFunctions.train_steps) takes over the buffers of the
  state and sums it is given, so a step never holds two copies of them: the caller's are
  deleted, the returned ones live."""
  _, split, keys, fns, order = first_steps
  state, sums = jax.device_put(_sgd_start(first_steps, np.float32))
  new_state, new_sums = fns.train_steps(1)(state, sums, split, order, keys.augment)
  assert all(x.is_deleted() for x in jax.tree.leaves((state.params, state.opt_state, sums)))
  assert not any(x.is_deleted() for x in jax.tree.leaves((new_state.params, new_sums)))


def _train_in_chunks(first_steps, chunks: list[int], dtype):
  """Those first steps, `chunks` steps per device program; SGD (see SEEDS_SCRIPT) so that
  float64 can serve as the yardstick."""
  _, split, keys, fns, order = first_steps
  state, sums = _sgd_start(first_steps, dtype)
  for num_steps in chunks:
    state, sums = fns.train_steps(num_steps)(state, sums, split, order, keys.augment)
  return jax.device_get((state.step, state.params, state.batch_stats, sums))


@pytest.mark.slow
def test_chunked_steps_are_the_per_step_loop(first_steps):
  """One epoch as chunks of 2, 2 and 1 steps, and as one chunk of 5 (each a `lax.scan` on
  the device), against five programs of one step: the same steps in the same order,
  apart at most by float rounding (bitwise equal on this project's CPUs)."""
  reference = _train_in_chunks(first_steps, [1] * 5, np.float32)
  with jax.enable_x64(True):
    exact = _train_in_chunks(first_steps, [1] * 5, np.float64)
  assert epoch.chunk_lengths(5, 2) == [2, 2, 1]
  for chunks in ([2, 2, 1], [5]):
    step, params, batch_stats, sums = _train_in_chunks(first_steps, chunks, np.float32)
    assert step == 5
    what = f"chunks {chunks}: "
    assert_trees_as_accurate(params, reference[1], exact[1], what + "params")
    assert_trees_as_accurate(batch_stats, reference[2], exact[2], what + "batch_stats")
    assert_trees_as_accurate(sums, reference[3], exact[3], what + "sums")


def test_the_epoch_loop_reports_on_schedule_and_never_queues_too_much(first_steps):
  """25 steps (the 5 batches five times over), one program each, reporting every 1000
  steps: the loop waits for the device after the first program (the end of the warm-up),
  then at least every MAX_QUEUED_PROGRAMS programs (a long queue of 2-device programs can
  deadlock XLA:CPU), and at the end; chunks of 2 report after the first and at every 10."""
  assert epoch.MAX_QUEUED_PROGRAMS < 25
  _, split, keys, fns, order = first_steps
  most = epoch.MAX_QUEUED_PROGRAMS
  for chunk, every, want in ((1, 1000, [1, *range(1 + most, 25, most), 25]),
                            (2, 10, [2, 10, 20, 25])):
    reports = []
    state, _, done = epoch.train_epoch(
        fns.train_steps, *_sgd_start(first_steps, np.float32), split, order, keys.augment,
        steps_per_epoch=25, steps_per_chunk=chunk,
        report_every_steps=every, report=reports.append)
    assert reports == want
    assert int(state.step) == done == 25
