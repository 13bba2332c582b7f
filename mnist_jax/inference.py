"""A finished run as a model to ask: its latest checkpoint, class probabilities, and the
model exported as serialized StableHLO that runs with jax alone.

A run of N seeds is an ensemble: the probabilities are the mean over its seeds. A run
made with --precise-bn answers with its precise BatchNorm statistics (docs/usage.md "Precise
BatchNorm statistics"); any other with the running ones, as its test accuracy did. A sweep
answers with one setting's seeds: the best by final test accuracy, or the one asked for.
"""

import json
import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import export

from mnist_jax import augment, checkpointing, epoch, reporting, run_axis
from mnist_jax.config import Config


class Model(NamedTuple):
  state: object  # TrainState; a leading seed axis when config.num_seeds > 1
  config: Config  # of the setting answering, for a sweep
  epoch: int
  batch_norm_statistics: str  # "precise", "running" or "none" (Net)
  setting: str = ""  # for a sweep: which setting answers, and why that one


def load_run(workdir: str, setting: int | None = None, formulation="auto") -> Model:
  """The latest checkpoint of the run in `workdir`; CheckpointError when there is none.
  For a sweep, the seeds of its setting `setting` (default: the best by final test accuracy,
  `reporting.ranked_settings`); ValueError for a setting it does not have. `formulation`:
  how the model computes (`models.formulation_layers`), whichever the run trained with."""
  config_path = os.path.join(workdir, "config.json")
  if not os.path.isfile(config_path):
    raise checkpointing.CheckpointError(
        f"{workdir}: not a run folder (no config.json); give the folder train.py wrote")
  with open(config_path) as f:
    config = Config.from_dict(json.load(f))
  if not os.path.isdir(os.path.join(workdir, "checkpoints")):
    raise checkpointing.CheckpointError(
        f"{workdir}: no checkpoints; train first, or give a run folder that finished an epoch")
  template = epoch.abstract_state(config, formulation,
                                  jax.sharding.SingleDeviceSharding(jax.devices()[0]))
  checkpointer = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"))
  try:
    state, progress = checkpointer.restore(template)
    statistics = "running" if state.batch_stats else "none"
    if config.precise_bn:
      state = state.replace(
          batch_stats=checkpointer.restore_precise_batch_stats(state.batch_stats))
      statistics = "precise"
  finally:
    checkpointer.close()
  last = progress["history"][-1]
  if not config.sweep:
    if setting not in (None, 0):
      raise ValueError(f"--setting {setting}: {workdir} is no sweep; leave --setting out")
    return Model(state, config, last["epoch"], statistics)
  num_settings = len(config.settings())
  if setting is None:
    setting, why = reporting.ranked_settings(last)[0], "the best by final test accuracy"
  elif 0 <= setting < num_settings:
    why = "as asked"
  else:
    raise ValueError(f"--setting {setting}: the sweep has {num_settings} settings; use 0 to "
                     f"{num_settings - 1} (sweep.csv lists them)")
  n = config.num_seeds
  runs = slice(setting * n, (setting + 1) * n) if n > 1 else setting
  return Model(jax.tree.map(lambda x: x[runs], state), config.setting(setting), last["epoch"],
               statistics, f"setting {setting} of {num_settings} "
               f"({reporting.setting_name(config.settings()[setting])}), {why}")


def probabilities(state, images_NHWC, num_seeds: int = 1) -> jax.Array:
  """(N, 10) class probabilities of uint8 MNIST images (eval mode; mean over seeds)."""
  def one(state):
    logits_NC = state.apply_fn({"params": state.params, "batch_stats": state.batch_stats},
                               augment.normalize(images_NHWC), train=False)
    return jax.nn.softmax(logits_NC, axis=-1)
  if num_seeds == 1:
    return one(state)
  # One trace for all seeds (vmap): at start-up, tracing each seed apart costs more than
  # the grouped convolutions XLA:CPU runs for a few pictures.
  return jnp.mean(run_axis.over_runs(one, (0,), num_seeds, "vmap")(state), axis=0)


def predictor(model: Model):
  """`probs_N10 = f(digits_N28281)`: `probabilities` of the run, jitted once for its state."""
  jitted = jax.jit(probabilities, static_argnums=2)
  return lambda digits_NHWC: np.asarray(jitted(model.state, digits_NHWC, model.config.num_seeds))


def one_seed(model: Model, seed_index: int):
  """Seed `seed_index` of a run (the run `--seed SEED+seed_index` gives alone)."""
  if not 0 <= seed_index < model.config.num_seeds:
    raise ValueError(f"--seed-index {seed_index}: the run has {model.config.num_seeds} seed(s); "
                     f"use 0 to {model.config.num_seeds - 1}")
  if model.config.num_seeds == 1:
    return model.state
  return jax.tree.map(lambda x: x[seed_index], model.state)


def export_logits(state) -> bytes:
  """`logits_N10 = f(images_N28281)` for uint8 MNIST images of any batch size N, the
  normalisation and the weights inside, as `jax.export` bytes. Load and run with jax alone:
  `jax.export.deserialize(data).call(images)`."""
  variables = {"params": state.params, "batch_stats": state.batch_stats}

  def logits(images_NHWC):
    return state.apply_fn(variables, augment.normalize(images_NHWC), train=False)
  images = jax.ShapeDtypeStruct(export.symbolic_shape("n, 28, 28, 1"), jnp.uint8)
  return bytes(export.export(jax.jit(logits))(images).serialize())
