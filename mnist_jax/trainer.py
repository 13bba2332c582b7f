"""The training loop: `train_and_evaluate(config, workdir)` returns the final state."""

import contextlib
import dataclasses
import fcntl
import math
import os
import re

import jax
import numpy as np
from jax.experimental import multihost_utils

from mnist_jax import checkpointing
from mnist_jax import data as data_lib
from mnist_jax import models, reporting, run_axis, signals, tensorboard
from mnist_jax.phases import Phases, StepTrace, summary_line
from mnist_jax import run as run_lib
from mnist_jax.config import Config, Execution
from mnist_jax.run import RunError  # pylint: disable=unused-import  # raised here too
from mnist_jax.train_state import TrainState


class TrainingDiverged(Exception):
  """The loss became NaN or infinite; the last good checkpoint is kept."""


class ProcessLost(Exception):
  """In a multi-host run, a collective failed: another process is gone. The last complete
  checkpoint is kept; `__cause__` is the collective's error."""


class Stopped(Exception):
  """A stop signal ended the run at a step boundary; a checkpoint of that step is kept."""


class WriteFailed(Exception):
  """A file of the run could not be written (a full disk, a read-only or vanished folder);
  what was complete before is kept."""


def holds_run(workdir: str) -> bool:
  """Whether `workdir` holds a run to continue: its metrics or a checkpoint. (What a run that
  failed in its first epoch leaves, config.json and an empty checkpoints/, does not count.)"""
  checkpoints = os.path.join(workdir, "checkpoints")
  return os.path.exists(os.path.join(workdir, "metrics.jsonl")) or (
      os.path.isdir(checkpoints) and any(name.isdigit() or name == checkpointing.INTERRUPTED
                                         for name in os.listdir(checkpoints)))


def train_and_evaluate(config: Config, workdir: str, execution: Execution = Execution(),
                       resume: bool = False,
                       datasets: dict[str, data_lib.Split] | None = None,
                       phases: Phases | None = None) -> TrainState:
  """Trains and evaluates per the recipe `config`, computed as `execution` says; writes
  metrics, curves and checkpoints to `workdir`.

  With `resume`, continues from the newest intact checkpoint in `workdir` (an epoch's, or the
  one a stop signal left in the middle of the next epoch), whose recipe must be this one (more
  epochs allowed); without it, a `workdir` that already holds a run is refused rather than
  overwritten. Nothing is written before the data has loaded. `datasets`: MNIST's splits as
  `load_mnist` returns them, when the caller has them already; default: loaded per `execution`.
  SIGTERM and SIGINT stop the run at the next step boundary with a checkpoint of it (Stopped).
  `phases`: the clock of the process's phases so far (train.py's, from the process's start);
  default: one from now. The run's phases are reported on the last epoch's line of
  metrics.jsonl (`phases_seconds`) and, in one line, on the console.
  """
  if phases is None:
    phases = Phases("setup", from_process_start=False)
  phases.listen_to_jax()
  try:
    return _train_and_evaluate(config, workdir, execution, resume, datasets, phases)
  finally:
    phases.stop_listening()


def _train_and_evaluate(config: Config, workdir: str, execution: Execution, resume: bool,
                        datasets: dict[str, data_lib.Split] | None, phases: Phases) -> TrainState:
  found = holds_run(workdir)
  if jax.process_count() > 1:  # process 0's look, taken before it writes, decides for all:
    # a process that looked later would see the run just started and refuse alone
    found = bool(multihost_utils.broadcast_one_to_all(np.int32(found)))
  if not resume and found:
    raise RunError(f"{workdir}: already holds a run; pass --resume to continue it "
                   "or choose another --workdir")
  if resume and not found:
    raise checkpointing.CheckpointError(
        f"{workdir}: no checkpoints to resume from; run without --resume to start training")
  mesh = run_lib.make_mesh(config, execution)
  if datasets is None:
    phases.enter("data")
    datasets = data_lib.load_mnist(execution.data_dir, execution.mnist_url,
                                   show_progress=execution.show_progress)
  run_lib.check_data(config, datasets)  # before anything is written
  phases.enter("initialisation")

  os.makedirs(workdir, exist_ok=True)
  with _only_run_in(workdir), signals.StopRequests() as stop:
    if not resume and jax.process_count() == 1 and holds_run(workdir):  # (one that just ended)
      raise RunError(f"{workdir}: already holds a run; pass --resume to continue it "
                     "or choose another --workdir")
    checkpointer = checkpointing.Checkpointer(
        os.path.join(workdir, "checkpoints"), execution.keep_checkpoints)
    try:
      if resume:
        run, sums, start = _resumed_run(config, execution, datasets, mesh, checkpointer)
      else:
        run, sums, start = run_lib.build_run(config, execution, datasets, mesh), None, 0
      trace = StepTrace(execution.profile_dir if jax.process_index() == 0 else None)
      try:
        state, history, epochs_trained = _train(run, workdir, checkpointer, stop, phases, trace,
                                                sums, start)
      finally:
        trace.close()
    except jax.errors.JaxRuntimeError as e:
      if jax.process_count() == 1:
        _close_quietly(checkpointer)
        raise
      # No waiting for a save in flight: it would wait for the lost process too.
      raise ProcessLost(_process_lost_message(e, checkpointer)) from e
    except OSError as e:  # metrics, plots, config: the checkpoints are orbax's (below)
      _close_quietly(checkpointer)
      raise WriteFailed(f"cannot write {e.filename or 'a file'} ({e.strerror}); "
                        f"{_kept(checkpointer)}; free space and run again with --resume") from e
    except BaseException:
      _close_quietly(checkpointer)
      raise
    phases.enter("checkpoints")
    checkpointer.close()  # waits for the last asynchronous save and writes its checksums
  if jax.process_index() == 0 and epochs_trained:  # this process's phases, on its last epoch
    report = phases.report()
    history[-1] = {**history[-1], "phases_seconds": report}
    reporting.write_metrics(os.path.join(workdir, "metrics.jsonl"), history)
    print(summary_line(report), flush=True)
  return state


@contextlib.contextmanager
def _only_run_in(workdir: str):
  """An exclusive lock on `workdir` for the run (process 0's, in a multi-host run): a second
  train.py started into the same folder at the same moment is refused, not mixed in."""
  if jax.process_index() != 0:
    yield
    return
  with open(os.path.join(workdir, ".lock"), "a") as lock:
    try:
      fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
      raise RunError(f"{workdir}: another train.py is running in it; wait for it to end, or "
                     "choose another --workdir") from None
    yield


def _close_quietly(checkpointer: checkpointing.Checkpointer) -> None:
  """Closes the checkpointer while another error is on its way (which is the one to report)."""
  try:
    checkpointer.close()
  except Exception:  # pylint: disable=broad-except
    pass


def _kept(checkpointer: checkpointing.Checkpointer) -> str:
  epoch = checkpointer.latest_complete_epoch()
  return (f"the checkpoint of epoch {epoch} is kept in {checkpointer.directory}"
          if epoch is not None else "no checkpoint was complete yet")


def _resumed_run(config: Config, execution: Execution, datasets: dict, mesh,
                 checkpointer: checkpointing.Checkpointer):
  """`(run, sums, steps done)` continuing the newest intact checkpoint: an epoch's, or the
  one a stop signal left in the epoch after it (then with that epoch's running sums). The
  recipe is checked against the saved one before any array is restored."""
  progress = checkpointer.restore_progress() if checkpointer.epochs() else None
  epochs_done = len(progress["history"]) if progress else 0
  stopped = checkpointer.interrupted_progress()
  if stopped is not None and stopped["epoch"] != epochs_done + 1:
    stopped = None  # a stop in an epoch that later completed (its checkpoint is newer)
  saved = stopped or progress
  if saved is None:
    raise checkpointing.CheckpointError(f"{checkpointer.directory}: no checkpoint to resume "
                                        "from; run without --resume to start training")
  if problem := config.resume_problem(Config.from_dict(saved["config"]), epochs_done):
    raise RunError(problem)
  run = run_lib.build_run(config, execution, datasets, mesh,
                          checkpointer if progress else None)
  if stopped is not None:
    restored = checkpointer.restore_interrupted(run.state, run.zero_sums())
    if restored is not None:  # (else it was damaged and moved aside: the epoch starts over)
      state, sums, _ = restored
      return dataclasses.replace(run, state=state, history=stopped["history"]), sums, \
          stopped["steps_done"]
  return run, None, 0


def _process_lost_message(error: Exception, checkpointer: checkpointing.Checkpointer) -> str:
  """The failed collective's error in one line, then what is kept and what to do."""
  cause = re.sub(r"^(\w+: )?(Error dispatching computation: )*", "",  # XLA's wrapping
                 str(error).strip().splitlines()[0])
  cause = re.sub(r"\[[\w/.-]+:\d+\] ", "", cause)  # and its source file's name
  epoch = checkpointer.latest_complete_epoch()
  kept = (f"the last complete checkpoint (epoch {epoch}) is kept in {checkpointer.directory}"
          if epoch is not None else "no checkpoint was complete yet")
  return f"{cause}; {kept}; start every process again with --resume"


def _train(run: run_lib.Run, workdir: str, checkpointer: checkpointing.Checkpointer,
           stop: signals.StopRequests, phases: Phases, trace: StepTrace, sums=None,
           start: int = 0):
  """The epochs from the run's state on (from `start` steps into the first, with their `sums`):
  train, evaluate, record, checkpoint. Returns `(state, history, epochs trained)`."""
  config, state, history = run.config, run.state, list(run.history)
  first_epoch = len(history) + 1
  writes_files = jax.process_index() == 0  # one writer in a multi-host run
  phases.enter("metrics")
  if writes_files:
    # Only now, with the data loaded and any checkpoint restored, has the run started.
    print(f"run folder: {workdir}", flush=True)
    reporting.write_json(os.path.join(workdir, "config.json"),
                         {**config.to_dict(), "execution": run.execution.to_dict()})
    reporting.write_text(os.path.join(workdir, "model_summary.txt"),
                         reporting.model_summary(models.get_model(config.model, "standard")))
  timer = reporting.EpochTimer(first_epoch=first_epoch)

  def should_stop() -> bool:  # after every program: every process asks, as its peers do
    trace.after_chunk()
    return stop.requested()

  events = tensorboard.EventWriter(workdir, config, history) if writes_files else None
  try:
    for epoch in range(first_epoch, config.num_epochs + 1):
      phases.enter("training")
      timer.start(epoch)
      with reporting.progress_bar(run.steps_per_epoch, epoch, disable=not (
          run.execution.show_progress and writes_files)) as bar:
        state, sums, done = run.train_epoch(state, epoch, lambda done: timer.step_done(bar, done),
                                            sums, start, should_stop)
      if done < run.steps_per_epoch:
        checkpointer.save_interrupted(state, sums, {"history": history, "config": config.to_dict(),
                                                    "epoch": epoch, "steps_done": done})
        raise Stopped(f"{stop.signal or 'a stop signal'}: stopped after step {done} of "
                      f"{run.steps_per_epoch} in epoch {epoch}; a checkpoint of it is kept in "
                      f"{checkpointer.directory}; run again with --resume to continue from it")
      train_loss, train_accuracy = run_axis.loss_and_accuracy(sums)
      sums, start = None, 0
      timer.trained()
      if not np.all(np.isfinite(train_loss)):
        raise TrainingDiverged(_diverged_message(config, train_loss, epoch, checkpointer))
      phases.enter("evaluation")
      if writes_files and epoch == config.num_epochs:  # while the device evaluates, for the
        reporting.start_importing_matplotlib()  # curves after it (not during compilation)
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
      phases.enter("checkpoints")
      checkpointer.save(epoch, state, {"history": history, "config": config.to_dict()},
                        precise_batch_stats=precise_stats)
      phases.enter("metrics")
      if writes_files:
        reporting.write_metrics(os.path.join(workdir, "metrics.jsonl"), history)
        events.write(history[-1])
        if config.sweep:
          reporting.write_sweep_csv(os.path.join(workdir, "sweep.csv"), config, history)
        print(reporting.format_epoch(history[-1]), flush=True)

    if writes_files:
      phases.enter("plots")
      reporting.plot_curves(os.path.join(workdir, "training_curves.png"), history)
      if config.sweep:
        reporting.plot_sweep(os.path.join(workdir, "sweep.png"), config, history)
        print(reporting.sweep_table(config, history), flush=True)
  finally:
    if events is not None:
      events.close()
  return state, history, config.num_epochs + 1 - first_epoch


def _diverged_message(config: Config, train_loss, epoch: int,
                      checkpointer: checkpointing.Checkpointer) -> str:
  diverged = [f"{run} ({loss:g})" for run, loss in zip(reporting.run_names(config), train_loss)
              if not math.isfinite(loss)]
  kept = (f"the last good checkpoint (epoch {epoch - 1}) is kept in {checkpointer.directory}; "
          "lower --lr and start a new run in another --workdir" if epoch > 1 else
          "no checkpoint was made; lower --lr and start again (in this --workdir too)")
  return f"the training loss became non-finite in epoch {epoch}: {', '.join(diverged)}; {kept}"
