"""The training loop: `train_and_evaluate(config, workdir)` returns the final state."""

import math
import os
import re
import time

import jax
import numpy as np
from jax.experimental import multihost_utils

from mnist_jax import checkpointing
from mnist_jax import data as data_lib
from mnist_jax import epoch as epoch_lib
from mnist_jax import input_pipeline
from mnist_jax import models
from mnist_jax import optim
from mnist_jax import parallel
from mnist_jax import reporting
from mnist_jax.config import Config
from mnist_jax.train_state import TrainState

# Fields that may change when a run is resumed; any other change would make the
# resumed run differ from an uninterrupted one.
RESUMABLE_CHANGES = {"num_epochs", "data_dir", "mnist_url", "progress_every_steps",
                     "keep_checkpoints", "eval_batch_size", "seed_map", "run_groups",
                     "steps_per_chunk", "precise_bn",
                     "precise_bn_batches", "precise_bn_augment"}


class RunError(Exception):
  """A run that cannot start as asked; the message says what to do."""


class TrainingDiverged(Exception):
  """The loss became NaN or infinite; the last good checkpoint is kept."""


class ProcessLost(Exception):
  """In a multi-host run, a collective failed: another process is gone. The last complete
  checkpoint is kept; `__cause__` is the collective's error."""


def _check_resumable(saved: dict, config: Config) -> None:
  saved = Config(**saved).to_dict()  # fields added since then: their defaults; lists: tuples
  changed = sorted(k for k, v in config.to_dict().items()
                   if k not in RESUMABLE_CHANGES and saved[k] != v)
  if changed:
    details = ", ".join(f"{k}={_shown(k, saved[k])} (now {_shown(k, getattr(config, k))})"
                        for k in changed)
    raise RunError(f"cannot resume: the checkpoint was made with {details}; "
                   "resume with the same settings or start a new --workdir")


def _shown(field: str, value) -> str:
  if field == "sweep":  # as the flags that give it
    return repr(" ".join(f"--sweep {name}={','.join(f'{v:g}' for v in values)}"
                         for name, values in value) or "none")
  return repr(value)


RUN_FILES = ("checkpoints", "metrics.jsonl", "config.json")


def train_and_evaluate(config: Config, workdir: str, resume: bool = False,
                       show_progress: bool = True,
                       datasets: dict[str, data_lib.Split] | None = None) -> TrainState:
  """Trains and evaluates per the config; writes metrics, curves and checkpoints to `workdir`.

  With `resume`, continues from the latest checkpoint in `workdir`; without it, a
  `workdir` that already holds a run is refused rather than overwritten. Nothing is
  written before the data has loaded. `datasets`: MNIST's splits as `load_mnist` returns
  them, when the caller has them already; default: loaded per the config.
  """
  holds_run = any(os.path.exists(os.path.join(workdir, f)) for f in RUN_FILES)
  if jax.process_count() > 1:  # process 0's look, taken before it writes, decides for all:
    # a process that looked later would see the run just started and refuse alone
    holds_run = bool(multihost_utils.broadcast_one_to_all(np.int32(holds_run)))
  if not resume and holds_run:
    raise RunError(f"{workdir}: already holds a run; pass --resume to continue it "
                   "or choose another --workdir")
  if problem := parallel.check_run_groups(config.run_groups, config.num_runs, jax.device_count()):
    raise RunError(problem)
  mesh = parallel.make_mesh(run_groups=config.run_groups)
  if problem := parallel.check_batch_size(config.batch_size, mesh):
    raise RunError(problem)
  if resume and not os.path.isdir(os.path.join(workdir, "checkpoints")):
    raise checkpointing.CheckpointError(
        f"{workdir}: no checkpoints to resume from; run without --resume to start training")

  if datasets is None:
    datasets = data_lib.load_mnist(config.data_dir, config.mnist_url)
  train_split = input_pipeline.subset(datasets["train"], config.num_train_examples)
  num_train = len(train_split.labels)
  if config.batch_size > num_train:
    raise RunError(f"--batch-size {config.batch_size} is larger than the "
                   f"{num_train} training examples; use at most {num_train}")

  os.makedirs(workdir, exist_ok=True)
  checkpointer = checkpointing.Checkpointer(
      os.path.join(workdir, "checkpoints"), config.keep_checkpoints)
  lost = False
  try:
    return _train(config, workdir, checkpointer, resume, show_progress, train_split,
                  input_pipeline.subset(datasets["test"], config.num_test_examples), mesh)
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


def _train(config, workdir, checkpointer, resume, show_progress,
           train_split, test_split, mesh) -> TrainState:
  num_train = len(train_split.labels)
  steps_per_epoch = input_pipeline.num_batches(num_train, config.batch_size)
  runs = parallel.per_run(mesh)  # replicated, unless a runs axis splits the runs
  keys = parallel.place(epoch_lib.run_keys(config), runs)
  hyperparams = parallel.place(epoch_lib.run_hyperparams(config), runs)
  history: list[dict] = []
  if resume:
    progress = checkpointer.restore_progress()
    _check_resumable(progress["config"], config)
    # Orbax restores into the template's sharding, so a checkpoint written on any number
    # of devices resumes on this mesh.
    state, progress = checkpointer.restore(
        epoch_lib.abstract_state(config, runs, steps_per_epoch))
    history = progress["history"]
  else:
    state = epoch_lib.init_state(config, keys.init, steps_per_epoch, runs)
  writes_files = jax.process_index() == 0  # one writer in a multi-host run
  if writes_files:
    # Only now, with the data loaded and any checkpoint restored, has the run started.
    print(f"run folder: {workdir}", flush=True)
    reporting.write_json(os.path.join(workdir, "config.json"), config.to_dict())
    reporting.write_text(os.path.join(workdir, "model_summary.txt"),
                         reporting.model_summary(models.get_model(config.model)))

  # Every device holds the (small) uint8 dataset and gathers its own slice of each batch.
  train_data = input_pipeline.to_device(train_split, mesh)
  test_data = input_pipeline.to_device(test_split, mesh)
  eval_batch_size = epoch_lib.round_up_to_devices(
      min(config.eval_batch_size, len(test_split.labels)), mesh)
  test_order = parallel.replicate(
      input_pipeline.sequential_order(len(test_data.labels), eval_batch_size), mesh)
  settings = [config.setting(i) for i in range(len(config.settings()))]
  fns = epoch_lib.jit_epoch_functions(config, num_train, eval_batch_size, mesh)
  steps_per_chunk = min(
      config.steps_per_chunk or epoch_lib.default_steps_per_chunk(steps_per_epoch),
      steps_per_epoch)

  first_step_done = {}  # in the first epoch of this process: when its first step was done
  first_epoch = len(history) + 1

  def report(steps_done):
    if not first_step_done:
      first_step_done.update(at=time.perf_counter(),
                             since_start=reporting.seconds_since_process_start())
    bar.update(steps_done - bar.n)

  for epoch in range(first_epoch, config.num_epochs + 1):
    start = time.perf_counter()
    order = fns.order(keys.data, parallel.replicate(np.int32(epoch), mesh))
    sums = parallel.place(epoch_lib.zero_sums(config.num_runs), runs)
    bar = reporting.progress_bar(steps_per_epoch, epoch,
                                 disable=not (show_progress and writes_files))
    # Any implicit host<->device copy inside the loop would be a hidden sync: fail loudly.
    with jax.transfer_guard("disallow"):
      state, sums = epoch_lib.train_epoch(
          fns.train_steps, state, sums, train_data, order, keys.augment, hyperparams,
          steps_per_epoch=steps_per_epoch, steps_per_chunk=steps_per_chunk,
          report_every_steps=config.progress_every_steps,
          report=report)
    bar.close()
    train_loss, train_accuracy = epoch_lib.per_run(sums)
    train_seconds = time.perf_counter() - start
    test_loss, test_accuracy = epoch_lib.per_run(fns.evaluate(state, test_data, test_order))
    if not np.all(np.isfinite(train_loss)):
      diverged = [run for run, loss in zip(reporting.run_names(config), train_loss)
                  if not math.isfinite(loss)]
      raise TrainingDiverged(
          f"the training loss became {train_loss.tolist()} in epoch {epoch} "
          f"({', '.join(diverged)}); the last good checkpoint (epoch {epoch - 1}) is "
          f"kept in {checkpointer.directory}; lower --lr and start a new run")
    metrics = {"train_loss": train_loss, "train_accuracy": train_accuracy,
               "test_loss": test_loss, "test_accuracy": test_accuracy}
    precise_stats = None
    if fns.precise_batch_stats is not None:
      precise_start = time.perf_counter()
      precise_stats = fns.precise_batch_stats(state, train_data, order, keys.augment)
      metrics["test_loss_precise_bn"], metrics["test_accuracy_precise_bn"] = epoch_lib.per_run(
          fns.evaluate(state.replace(batch_stats=precise_stats), test_data, test_order))
      precise_seconds = time.perf_counter() - precise_start
    per_setting = [{
        **reporting.seed_statistics(
            {k: v[i * config.num_seeds:(i + 1) * config.num_seeds] for k, v in metrics.items()},
            epoch_lib.seed_values(config)),
        "learning_rate": float(optim.step_lr((epoch - 1) * steps_per_epoch, steps_per_epoch,
                                             s.learning_rate, s.step_size, s.gamma)),
    } for i, s in enumerate(settings)]
    record = {
        "epoch": epoch,
        **(reporting.sweep_entries(config, per_setting) if config.sweep else per_setting[0]),
        "epoch_seconds": train_seconds,
        "eval_seconds": time.perf_counter() - start - train_seconds,
        "images_per_second": config.num_runs * num_train / train_seconds,
    }
    if precise_stats is not None:
      record["precise_bn_seconds"] = precise_seconds
    if epoch == first_epoch:  # start-up: compiling (or loading from the cache) the first step
      record["warmup_seconds"] = first_step_done["at"] - start
      if first_step_done["since_start"] is not None:
        record["process_start_to_first_step_seconds"] = first_step_done["since_start"]
    history.append(record)
    checkpointer.save(epoch, state, {"history": history, "config": config.to_dict()},
                      precise_batch_stats=precise_stats)
    if writes_files:
      reporting.write_metrics(os.path.join(workdir, "metrics.jsonl"), history)
      if config.sweep:
        reporting.write_sweep_csv(os.path.join(workdir, "sweep.csv"), config, history)
      print(reporting.format_epoch(record), flush=True)

  if writes_files:
    reporting.plot_curves(os.path.join(workdir, "training_curves.png"), history)
    if config.sweep:
      reporting.plot_sweep(os.path.join(workdir, "sweep.png"), config, history)
      print(reporting.sweep_table(config, history), flush=True)
  return state
