"""The training loop: `train_and_evaluate(config, workdir)` returns the final state."""

import math
import os
import re

import jax
import numpy as np
from jax.experimental import multihost_utils

from mnist_jax import checkpointing
from mnist_jax import data as data_lib
from mnist_jax import models, reporting, run_axis
from mnist_jax import run as run_lib
from mnist_jax.config import Config, Execution
from mnist_jax.run import RunError  # pylint: disable=unused-import  # raised here too
from mnist_jax.train_state import TrainState


class TrainingDiverged(Exception):
  """The loss became NaN or infinite; the last good checkpoint is kept."""


class ProcessLost(Exception):
  """In a multi-host run, a collective failed: another process is gone. The last complete
  checkpoint is kept; `__cause__` is the collective's error."""


RUN_FILES = ("checkpoints", "metrics.jsonl", "config.json")


def train_and_evaluate(config: Config, workdir: str, execution: Execution = Execution(),
                       resume: bool = False,
                       datasets: dict[str, data_lib.Split] | None = None) -> TrainState:
  """Trains and evaluates per the recipe `config`, computed as `execution` says; writes
  metrics, curves and checkpoints to `workdir`.

  With `resume`, continues from the latest checkpoint in `workdir`, whose recipe must be
  this one (more epochs allowed); without it, a `workdir` that already holds a run is
  refused rather than overwritten. Nothing is written before the data has loaded.
  `datasets`: MNIST's splits as `load_mnist` returns them, when the caller has them
  already; default: loaded per `execution`.
  """
  holds_run = any(os.path.exists(os.path.join(workdir, f)) for f in RUN_FILES)
  if jax.process_count() > 1:  # process 0's look, taken before it writes, decides for all:
    # a process that looked later would see the run just started and refuse alone
    holds_run = bool(multihost_utils.broadcast_one_to_all(np.int32(holds_run)))
  if not resume and holds_run:
    raise RunError(f"{workdir}: already holds a run; pass --resume to continue it "
                   "or choose another --workdir")
  mesh = run_lib.make_mesh(config, execution)
  if resume and not os.path.isdir(os.path.join(workdir, "checkpoints")):
    raise checkpointing.CheckpointError(
        f"{workdir}: no checkpoints to resume from; run without --resume to start training")
  if datasets is None:
    datasets = data_lib.load_mnist(execution.data_dir, execution.mnist_url)
  run_lib.check_data(config, datasets)  # before anything is written

  os.makedirs(workdir, exist_ok=True)
  checkpointer = checkpointing.Checkpointer(
      os.path.join(workdir, "checkpoints"), execution.keep_checkpoints)
  lost = False
  try:
    if resume:  # the recipe is checked before any array is restored
      progress = checkpointer.restore_progress()
      if problem := config.resume_problem(Config.from_dict(progress["config"]),
                                          len(progress["history"])):
        raise RunError(problem)
    run = run_lib.build_run(config, execution, datasets, mesh,
                            checkpointer if resume else None)
    return _train(run, workdir, checkpointer)
  except jax.errors.JaxRuntimeError as e:
    if jax.process_count() == 1:
      raise
    lost = True
    raise ProcessLost(_process_lost_message(e, checkpointer)) from e
  finally:
    if not lost:  # waiting for a save in flight would wait for the lost process too
      checkpointer.close()  # waits for the last asynchronous save


def _process_lost_message(error: Exception, checkpointer: checkpointing.Checkpointer) -> str:
  """The failed collective's error in one line, then what is kept and what to do."""
  cause = re.sub(r"^(\w+: )?(Error dispatching computation: )*", "",  # XLA's wrapping
                 str(error).strip().splitlines()[0])
  cause = re.sub(r"\[[\w/.-]+:\d+\] ", "", cause)  # and its source file's name
  epoch = checkpointer.latest_complete_epoch()
  kept = (f"the last complete checkpoint (epoch {epoch}) is kept in {checkpointer.directory}"
          if epoch is not None else "no checkpoint was complete yet")
  return f"{cause}; {kept}; start every process again with --resume"


def _train(run: run_lib.Run, workdir: str, checkpointer: checkpointing.Checkpointer) -> TrainState:
  """The epochs from the run's state on: train, evaluate, record, checkpoint."""
  config, state, history = run.config, run.state, list(run.history)
  writes_files = jax.process_index() == 0  # one writer in a multi-host run
  if writes_files:
    # Only now, with the data loaded and any checkpoint restored, has the run started.
    print(f"run folder: {workdir}", flush=True)
    reporting.write_json(os.path.join(workdir, "config.json"),
                         {**config.to_dict(), "execution": run.execution.to_dict()})
    reporting.write_text(os.path.join(workdir, "model_summary.txt"),
                         reporting.model_summary(models.get_model(config.model, "standard")))
  timer = reporting.EpochTimer(first_epoch=len(history) + 1)
  for epoch in range(len(history) + 1, config.num_epochs + 1):
    timer.start(epoch)
    with reporting.progress_bar(run.steps_per_epoch, epoch, disable=not (
        run.execution.show_progress and writes_files)) as bar:
      state, sums = run.train_epoch(state, epoch, report=lambda done: timer.step_done(bar, done))
      train_loss, train_accuracy = run_axis.loss_and_accuracy(sums)
    timer.trained()
    if not np.all(np.isfinite(train_loss)):
      raise TrainingDiverged(_diverged_message(config, train_loss, epoch, checkpointer))
    metrics = {"train_loss": train_loss, "train_accuracy": train_accuracy}
    metrics["test_loss"], metrics["test_accuracy"] = run_axis.loss_and_accuracy(
        run.evaluate(state))
    precise_stats = None
    if config.precise_bn:
      timer.evaluated()
      precise_stats = run.precise_batch_stats(state, epoch)
      metrics["test_loss_precise_bn"], metrics["test_accuracy_precise_bn"] = (
          run_axis.loss_and_accuracy(run.evaluate(state.replace(batch_stats=precise_stats))))
    history.append(reporting.epoch_record(
        config, epoch, metrics, run_axis.learning_rates(config, epoch, run.steps_per_epoch),
        timer.seconds(num_images=config.num_runs * run.num_train)))
    checkpointer.save(epoch, state, {"history": history, "config": config.to_dict()},
                      precise_batch_stats=precise_stats)
    if writes_files:
      reporting.write_metrics(os.path.join(workdir, "metrics.jsonl"), history)
      if config.sweep:
        reporting.write_sweep_csv(os.path.join(workdir, "sweep.csv"), config, history)
      print(reporting.format_epoch(history[-1]), flush=True)

  if writes_files:
    reporting.plot_curves(os.path.join(workdir, "training_curves.png"), history)
    if config.sweep:
      reporting.plot_sweep(os.path.join(workdir, "sweep.png"), config, history)
      print(reporting.sweep_table(config, history), flush=True)
  return state


def _diverged_message(config: Config, train_loss, epoch: int,
                      checkpointer: checkpointing.Checkpointer) -> str:
  diverged = [run for run, loss in zip(reporting.run_names(config), train_loss)
              if not math.isfinite(loss)]
  return (f"the training loss became {train_loss.tolist()} in epoch {epoch} "
          f"({', '.join(diverged)}); the last good checkpoint (epoch {epoch - 1}) is "
          f"kept in {checkpointer.directory}; lower --lr and start a new run")
