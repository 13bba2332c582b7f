"""The training loop: `train_and_evaluate(config, workdir)` returns the final state."""

import functools
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from mnist_jax import checkpointing
from mnist_jax import data as data_lib
from mnist_jax import input_pipeline
from mnist_jax import models
from mnist_jax import optim
from mnist_jax import parallel
from mnist_jax import reporting
from mnist_jax import steps
from mnist_jax.config import Config
from mnist_jax.train_state import TrainState, create_train_state

# Fields that may change when a run is resumed; any other change would make the
# resumed run differ from an uninterrupted one.
RESUMABLE_CHANGES = {"num_epochs", "data_dir", "mnist_url", "progress_every_steps",
                     "keep_checkpoints", "eval_batch_size"}


class RunError(Exception):
  """A run that cannot start as asked; the message says what to do."""


class TrainingDiverged(Exception):
  """The loss became NaN or infinite; the last good checkpoint is kept."""


def zero_sums() -> steps.Metrics:
  return {k: jnp.zeros((), jnp.float32) for k in ("loss_sum", "correct", "count")}


def _add(a: steps.Metrics, b: steps.Metrics) -> steps.Metrics:
  return jax.tree.map(jnp.add, a, b)


def train_batch(state, sums, split, order, augment_key, *, steps_per_epoch: int,
                batch_size: int, augment: bool, mesh=None):
  """The next step of the epoch: everything it needs is already on the device.

  The batch position and the augmentation key follow from `state.step`, so the
  host sends nothing per step and a resumed run draws the same randomness. With a
  mesh, each device gathers and computes its own slice of the batch.
  """
  batch = parallel.shard_batch(
      input_pipeline.get_batch(split, order, state.step % steps_per_epoch, batch_size), mesh)
  key = jax.random.fold_in(augment_key, state.step)
  state, metrics = steps.train_step(state, batch, key, augment_images=augment)
  return state, _add(sums, metrics)


def evaluate(state, split, order, *, batch_size: int, mesh=None) -> steps.Metrics:
  """Metric sums over a whole split, every example exactly once."""
  def body(i, sums):
    batch = parallel.shard_batch(input_pipeline.get_batch(split, order, i, batch_size), mesh)
    return _add(sums, steps.eval_step(state, batch))
  return jax.lax.fori_loop(0, order.indices.shape[0] // batch_size, body, zero_sums())


def round_up_to_devices(batch_size: int, mesh) -> int:
  return -(-batch_size // mesh.size) * mesh.size


def jit_steps(config: Config, steps_per_epoch: int, eval_batch_size: int, mesh):
  """`train_batch` and `evaluate` as the loop runs them: jitted for the mesh, the state
  and running sums donated. benchmarks/benchmark.py times these same functions."""
  replicated = parallel.replicated(mesh)
  train_batch_fn = jax.jit(
      functools.partial(train_batch, steps_per_epoch=steps_per_epoch,
                        batch_size=config.batch_size, augment=config.augment, mesh=mesh),
      in_shardings=replicated, out_shardings=replicated, donate_argnums=(0, 1))
  evaluate_fn = jax.jit(
      functools.partial(evaluate, batch_size=eval_batch_size, mesh=mesh),
      in_shardings=replicated, out_shardings=replicated)
  return train_batch_fn, evaluate_fn


def _check_resumable(saved: dict, config: Config) -> None:
  changed = sorted(k for k, v in config.to_dict().items()
                   if k not in RESUMABLE_CHANGES and saved.get(k, v) != v)
  if changed:
    details = ", ".join(f"{k}={saved[k]!r} (now {getattr(config, k)!r})" for k in changed)
    raise RunError(f"cannot resume: the checkpoint was made with {details}; "
                   "resume with the same settings or start a new --workdir")


def _summarise(sums: dict) -> tuple[float, float]:
  count = max(float(sums["count"]), 1.0)
  return float(sums["loss_sum"]) / count, float(sums["correct"]) / count


RUN_FILES = ("checkpoints", "metrics.jsonl", "config.json")


def train_and_evaluate(config: Config, workdir: str, resume: bool = False,
                       show_progress: bool = True) -> TrainState:
  """Trains and evaluates per the config; writes metrics, curves and checkpoints to `workdir`.

  With `resume`, continues from the latest checkpoint in `workdir`; without it, a
  `workdir` that already holds a run is refused rather than overwritten. Nothing is
  written before the data has loaded.
  """
  if not resume and any(os.path.exists(os.path.join(workdir, f)) for f in RUN_FILES):
    raise RunError(f"{workdir}: already holds a run; pass --resume to continue it "
                   "or choose another --workdir")
  mesh = parallel.make_mesh()
  if problem := parallel.check_batch_size(config.batch_size, mesh):
    raise RunError(problem)
  if resume and not os.path.isdir(os.path.join(workdir, "checkpoints")):
    raise checkpointing.CheckpointError(
        f"{workdir}: no checkpoints to resume from; run without --resume to start training")

  datasets = data_lib.load_mnist(config.data_dir, config.mnist_url)
  train_split = input_pipeline.subset(datasets["train"], config.num_train_examples)
  num_train = len(train_split.labels)
  if config.batch_size > num_train:
    raise RunError(f"--batch-size {config.batch_size} is larger than the "
                   f"{num_train} training examples; use at most {num_train}")

  os.makedirs(workdir, exist_ok=True)
  checkpointer = checkpointing.Checkpointer(
      os.path.join(workdir, "checkpoints"), config.keep_checkpoints)
  try:
    return _train(config, workdir, checkpointer, resume, show_progress,
                  train_split, datasets["test"], mesh)
  finally:
    checkpointer.close()  # waits for the last asynchronous save


def _train(config, workdir, checkpointer, resume, show_progress,
           train_split, test_split, mesh) -> TrainState:
  num_train = len(train_split.labels)
  steps_per_epoch = input_pipeline.num_batches(num_train, config.batch_size)
  model = models.get_model(config.model)
  init_key, data_key, augment_key = jax.random.split(jax.random.key(config.seed), 3)
  # On the mesh before a restore: orbax restores into the template's sharding, so a
  # checkpoint written on any number of devices resumes on this one.
  state = parallel.replicate(create_train_state(init_key, model, config, steps_per_epoch),
                             mesh)
  history: list[dict] = []
  if resume:
    state, progress = checkpointer.restore(state)
    _check_resumable(progress["config"], config)
    history = progress["history"]
  writes_files = jax.process_index() == 0  # one writer in a multi-host run
  if writes_files:
    # Only now, with the data loaded and any checkpoint restored, has the run started.
    print(f"run folder: {workdir}", flush=True)
    reporting.write_json(os.path.join(workdir, "config.json"), config.to_dict())
    reporting.write_text(os.path.join(workdir, "model_summary.txt"), reporting.model_summary(
        model, {"params": state.params, "batch_stats": state.batch_stats}))

  # Every device holds the (small) uint8 dataset and gathers its own slice of each batch.
  train_data = input_pipeline.to_device(train_split, mesh)
  test_data = input_pipeline.to_device(test_split, mesh)
  eval_batch_size = round_up_to_devices(config.eval_batch_size, mesh)
  test_order = parallel.replicate(
      input_pipeline.sequential_order(len(test_data.labels), eval_batch_size), mesh)
  data_key, augment_key = parallel.replicate((data_key, augment_key), mesh)
  schedule = optim.step_lr_schedule(config.learning_rate, steps_per_epoch,
                                    config.step_size, config.gamma, config.num_epochs)
  train_batch_fn, evaluate_fn = jit_steps(config, steps_per_epoch, eval_batch_size, mesh)
  shuffled_order_fn = jax.jit(
      lambda key, epoch: input_pipeline.shuffled_order(
          jax.random.fold_in(key, epoch), num_train, config.batch_size),
      out_shardings=parallel.replicated(mesh))

  for epoch in range(len(history) + 1, config.num_epochs + 1):
    start = time.perf_counter()
    order = shuffled_order_fn(data_key, parallel.replicate(np.int32(epoch), mesh))
    sums = parallel.replicate(zero_sums(), mesh)
    bar = reporting.progress_bar(steps_per_epoch, epoch,
                                 disable=not (show_progress and writes_files))
    # Any implicit host<->device copy inside the loop would be a hidden sync: fail loudly.
    with jax.transfer_guard("disallow"):
      for i in range(1, steps_per_epoch + 1):
        state, sums = train_batch_fn(state, sums, train_data, order, augment_key)
        if i % config.progress_every_steps == 0 or i == steps_per_epoch:
          sums["count"].block_until_ready()
          bar.update(i - bar.n)
    bar.close()
    train_loss, train_accuracy = _summarise(jax.device_get(sums))
    train_seconds = time.perf_counter() - start
    test_loss, test_accuracy = _summarise(jax.device_get(
        evaluate_fn(state, test_data, test_order)))
    if not math.isfinite(train_loss):
      raise TrainingDiverged(
          f"the training loss became {train_loss} in epoch {epoch}; the last good "
          f"checkpoint (epoch {epoch - 1}) is kept in {checkpointer.directory}; "
          "lower --lr and start a new run")
    record = {
        "epoch": epoch,
        "train_loss": train_loss, "train_accuracy": train_accuracy,
        "test_loss": test_loss, "test_accuracy": test_accuracy,
        "learning_rate": float(schedule((epoch - 1) * steps_per_epoch)),
        "epoch_seconds": train_seconds,
        "eval_seconds": time.perf_counter() - start - train_seconds,
        "images_per_second": num_train / train_seconds,
    }
    history.append(record)
    checkpointer.save(epoch, state, {"history": history, "config": config.to_dict()})
    if writes_files:
      reporting.write_metrics(os.path.join(workdir, "metrics.jsonl"), history)
      print(reporting.format_epoch(record), flush=True)

  if writes_files:
    reporting.plot_curves(os.path.join(workdir, "training_curves.png"), history)
  return state
