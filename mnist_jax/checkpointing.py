"""Orbax checkpoints of the train state plus what a resumed run needs to continue.

A checkpoint is named by the number of completed epochs. With the state's step and
the run's seed, that fixes the next epoch's data order and augmentation keys, so a
resumed run continues exactly where the interrupted one stopped. A run with
--precise-bn also keeps that epoch's precise BatchNorm statistics beside the state
(`restore_precise_batch_stats`). A run stopped by a signal keeps one more checkpoint in
the middle of an epoch, `interrupted/`, with the epoch's running sums (`save_interrupted`).

Orbax writes each checkpoint to a temporary folder and renames it when complete, so a save
cut short by a crash is never taken for the latest (and its leftover is cleared at the next
start). Once a save is complete, every file of it gets a SHA-256 in `checksums.json`; a
restore verifies them and skips a checkpoint that fails, or that orbax cannot read, for the
newest intact one, moving it aside as `damaged-N` (never deleting it). Checkpoints written
before checksums were (or in the instant between a save and its checksums) restore unverified.
"""

import concurrent.futures
import hashlib
import json
import logging
import os
import shutil
import sys
from typing import Callable

import jax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

PRECISE_BN = "precise_batch_stats"
CHECKSUMS = "checksums.json"
INTERRUPTED = "interrupted"


class _LeftOutOnPurpose(logging.Filter):
  """Orbax warns (through absl) of every item of a checkpoint that a restore leaves out. Ours
  leave out the precise statistics on purpose (`restore_precise_batch_stats` reads them):
  that warning alone is dropped, twice per restore of a --precise-bn run otherwise."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not (f'"{PRECISE_BN}" was found in the checkpoint, but could not be restored'
                in record.getMessage())


logging.getLogger("absl").addFilter(_LeftOutOnPurpose())


class CheckpointError(Exception):
  """A checkpoint that cannot be restored; the message says what to do."""


class CheckpointWriteError(Exception):
  """A checkpoint could not be written (a full disk, a read-only or vanished folder); the
  message says what and where; earlier checkpoints are untouched."""


def _handlers(*array_items: str) -> ocp.handlers.DefaultCheckpointHandlerRegistry:
  """Orbax's handlers for the items of a checkpoint: JSON for `progress`, and for each of
  `array_items` a pytree of jax.Arrays written without orbax's default "replica-parallel"
  writes. Those cut each replicated array between the devices that hold it, each device
  writing a part: that compiles a slice program per array and device in a process's first
  save (16 programs, 0.44 s of train.py's start on 2 CPU devices) and gains nothing for
  arrays of kilobytes. The files are the same format as `StandardSave`'s (either reads the
  other's)."""
  registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
  for item in array_items:  # one handler per item: items are written concurrently
    arrays = ocp.PyTreeCheckpointHandler(type_handler_registry=(
        ocp.type_handlers.create_type_handler_registry(
            (jax.Array, ocp.type_handlers.ArrayHandler(use_replica_parallel=False)))))
    registry.add(item, ocp.args.PyTreeSave, arrays)
    registry.add(item, ocp.args.PyTreeRestore, arrays)
  progress = ocp.JsonCheckpointHandler()
  registry.add("progress", ocp.args.JsonSave, progress)
  registry.add("progress", ocp.args.JsonRestore, progress)
  return registry


def _restore(template) -> ocp.args.PyTreeRestore:
  """Restores a pytree of arrays in the structure, shapes and shardings of `template`."""
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
  return ocp.args.PyTreeRestore(
      item=abstract, restore_args=ocp.checkpoint_utils.construct_restore_args(abstract))


def _arrays(state) -> dict:
  return {"params": state.params, "batch_stats": state.batch_stats,
          "opt_state": state.opt_state, "step": state.step}


def _cause(error: BaseException) -> str:
  """An exception's first line, for a message of one line."""
  lines = str(error).strip().splitlines()
  return f"{type(error).__name__}: {lines[0] if lines else ''}"[:300]


def file_digests(folder: str) -> dict[str, str]:
  """SHA-256 of every file under `folder` but its checksums, by relative path."""
  digests = {}
  for root, _, names in os.walk(folder):
    for name in names:
      path = os.path.join(root, name)
      relative = os.path.relpath(path, folder)
      if relative == CHECKSUMS:
        continue
      digest = hashlib.sha256()
      with open(path, "rb") as f:
        for block in iter(lambda f=f: f.read(1 << 20), b""):
          digest.update(block)
      digests[relative] = digest.hexdigest()
  return digests


def write_checksums(folder: str) -> None:
  """`checksums.json` for the complete checkpoint in `folder`, written whole (renamed in place)."""
  tmp = os.path.join(folder, f"{CHECKSUMS}.tmp{os.getpid()}")
  try:
    digests = file_digests(folder)
    with open(tmp, "w") as f:
      json.dump(digests, f, indent=0, sort_keys=True)
    os.replace(tmp, os.path.join(folder, CHECKSUMS))
  except OSError:
    if os.path.exists(tmp):  # (a full disk): the checkpoint stays as orbax completed it
      os.remove(tmp)
    raise


def checksum_problem(folder: str) -> str | None:
  """What its checksums say is wrong with the checkpoint in `folder`; None when it matches
  them, or has none."""
  path = os.path.join(folder, CHECKSUMS)
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      want = json.load(f)
    got = file_digests(folder)
  except (OSError, ValueError) as e:
    return f"its files or checksums cannot be read ({_cause(e)})"
  if missing := sorted(set(want) - set(got)):
    return f"{missing[0]} is missing"
  if changed := sorted(k for k in want if got[k] != want[k]):
    return f"{changed[0]} does not match its checksum"
  return None


def _interrupted_checkpointer() -> ocp.Checkpointer:
  """Writes and reads `interrupted/`, synchronously."""
  return ocp.Checkpointer(ocp.CompositeCheckpointHandler(
      handler_registry=_handlers("state", "sums")))


class Checkpointer:
  """`report(line)` receives the notes of checkpoints skipped (default: stderr)."""

  def __init__(self, directory: str, keep: int = 3,
               report: Callable[[str], None] | None = None):
    self.directory = os.path.abspath(directory)
    self._report = report or (lambda line: print(f"note: {line}", file=sys.stderr, flush=True))
    self._manager = ocp.CheckpointManager(
        self.directory, options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, cleanup_tmp_directories=True),
        handler_registry=_handlers("state", PRECISE_BN))
    self._unsealed = None  # the epoch whose save is in flight: its checksums come when complete
    self.restored_epoch = None  # the epoch the last `restore` found intact
    # A single-process run's saves go to a worker thread, off the training path. A multi-host
    # run saves in the main thread: orbax synchronises processes with device collectives,
    # which every process must issue in the same order as the training's own.
    self._worker = (concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="checkpoint")
                    if jax.process_count() == 1 else None)
    self._writing = None  # the worker's save in progress

  def _folder(self, epoch) -> str:
    return os.path.join(self.directory, str(epoch))

  def latest_epoch(self) -> int | None:
    self._wait_for_worker()
    return self._manager.latest_step()

  def latest_complete_epoch(self) -> int | None:
    """The latest checkpoint complete on disk (an asynchronous save in flight is not)."""
    self._wait_for_worker()
    return self._latest_complete()

  def _latest_complete(self) -> int | None:
    self._manager.reload()
    return self._manager.latest_step()

  def save(self, epoch: int, state, progress: dict, precise_batch_stats=None) -> None:
    """Saves epoch `epoch`'s checkpoint: the state, `progress` (JSON: metrics history, config)
    and the precise statistics, if any. Returns before the files are written, in a
    single-process run before orbax starts (the arrays are copied on their devices first:
    the next epoch donates the state's buffers). The save before it, complete by now, gets its
    checksums. CheckpointWriteError if either fails; for a save in the worker thread, at
    the next call (`save`, `close`, ...)."""
    self._wait_for_worker()
    arrays = {"state": _arrays(state), PRECISE_BN: precise_batch_stats}
    if self._worker is None:
      self._save(epoch, arrays, progress)
    else:
      arrays = jax.tree.map(lambda x: jax.device_put(x, x.sharding, may_alias=False), arrays)
      self._writing = self._worker.submit(self._save, epoch, arrays, progress)

  def _wait_for_worker(self) -> None:
    """Waits for the worker's save, if any, raising its error."""
    writing, self._writing = self._writing, None
    if writing is not None:
      writing.result()

  def _save(self, epoch: int, arrays: dict, progress: dict) -> None:
    self._seal()
    if problem := self._space_problem(arrays):
      raise CheckpointWriteError(self._write_failure(epoch, problem))
    items = {name: ocp.args.PyTreeSave(tree) for name, tree in arrays.items()
             if tree is not None}
    items["progress"] = ocp.args.JsonSave(progress)
    try:
      self._manager.save(epoch, args=ocp.args.Composite(**items))
    except Exception as e:  # pylint: disable=broad-except  # orbax raises many types
      raise CheckpointWriteError(self._write_failure(epoch, e)) from e
    self._unsealed = epoch

  def _seal(self) -> None:
    """Waits for the save in flight; once complete, its checksums (process 0 writes)."""
    epoch, self._unsealed = self._unsealed, None
    try:
      self._manager.wait_until_finished()
      if epoch is not None and jax.process_index() == 0:
        write_checksums(self._folder(epoch))
        self._clear_interrupted()  # that epoch is complete: a stop earlier in it is past
    except Exception as e:  # pylint: disable=broad-except
      raise CheckpointWriteError(self._write_failure(epoch, e)) from e

  def _space_problem(self, arrays: dict) -> str | None:
    """Why the next checkpoint would not fit on its disk, judged before writing: a save that
    fills the disk half way fails in orbax's background writes, noisily. Its size: the last
    complete checkpoint's on disk (the same arrays), or at first its arrays' bytes and half
    again for orbax's metadata."""
    latest = self._latest_complete()
    if latest is not None:
      needed = sum(os.stat(os.path.join(root, name)).st_blocks * 512
                   for root, _, names in os.walk(self._folder(latest)) for name in names)
    else:
      needed = int(1.5 * sum(x.nbytes for x in jax.tree.leaves(arrays) if hasattr(x, "nbytes")))
    free = shutil.disk_usage(self.directory).free
    if free >= needed:
      return None
    return (f"No space left on device: about {needed / 1e3:,.0f} kB needed, "
            f"{free / 1e3:,.0f} kB free")

  def _write_failure(self, epoch, error) -> str:
    kept = self._latest_complete()
    cause = error if isinstance(error, str) else _cause(error)
    return (f"cannot write the checkpoint of epoch {epoch} in {self.directory} ({cause}); "
            + (f"the checkpoint of epoch {kept} is kept" if kept is not None
               else "no checkpoint was complete yet"))

  def _move_aside(self, folder: str, problem: str, then: str) -> None:
    name = f"damaged-{os.path.basename(folder)}"
    target = os.path.join(os.path.dirname(folder), name)
    n = 1
    while os.path.exists(target):
      n += 1
      target = os.path.join(os.path.dirname(folder), f"{name}-{n}")
    if jax.process_index() == 0:
      os.rename(folder, target)
      self._report(f"{folder}: damaged ({problem}); moved to {target}; {then}")
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f"moved aside {folder}")
    self._manager.reload()

  def _intact(self, restore_one: Callable[[int], object], epoch: int | None = None):
    """`(epoch, restore_one(epoch))` for `epoch`, or else the newest checkpoint that matches its
    checksums and restores; each one that does not is moved aside."""
    candidates = [epoch] if epoch is not None else sorted(self._manager.all_steps(), reverse=True)
    if not candidates:
      raise CheckpointError(f"{self.directory}: no checkpoint to resume from; run "
                            "without --resume to start training")
    for i, candidate in enumerate(candidates):
      problem = checksum_problem(self._folder(candidate))
      if problem is None:
        try:
          result = restore_one(candidate)
          self.restored_epoch = candidate
          return candidate, result
        except Exception as e:  # pylint: disable=broad-except  # orbax raises many types
          problem = f"it cannot be read: {_cause(e)}"
      rest = candidates[i + 1:]
      self._move_aside(self._folder(candidate), problem,
                       f"trying epoch {rest[0]}'s" if rest else "no checkpoint is left")
    raise CheckpointError(
        f"{self.directory}: no intact checkpoint is left (the damaged ones are kept beside it as "
        "damaged-N); start a new run in another --workdir")

  def restore_progress(self) -> dict:
    """The newest intact checkpoint's JSON part alone: check it before restoring arrays."""
    return self._intact(lambda epoch: self._manager.restore(
        epoch, args=ocp.args.Composite(progress=ocp.args.JsonRestore())))[1]["progress"]

  def epochs(self) -> list[int]:
    """The kept checkpoints, by completed epochs."""
    self._wait_for_worker()
    return sorted(self._manager.all_steps())

  def restore(self, state_template, epoch: int | None = None):
    """`(state, progress)` from the newest intact checkpoint (or `epoch`'s), in the
    template's structure; `restored_epoch` says which."""
    _, restored = self._intact(lambda epoch: self._manager.restore(epoch, args=ocp.args.Composite(
        state=_restore(_arrays(state_template)), progress=ocp.args.JsonRestore())), epoch)
    return state_template.replace(**restored["state"]), restored["progress"]

  def restore_precise_batch_stats(self, batch_stats_template, epoch: int | None = None):
    """The precise BatchNorm statistics of a --precise-bn run (by default of the epoch the
    last `restore` found), in the structure of the template (a state's `batch_stats`)."""
    epoch = epoch if epoch is not None else self.restored_epoch or self.latest_epoch()
    if epoch is None or PRECISE_BN not in self._manager.item_metadata(epoch):
      raise CheckpointError(f"{self._folder(epoch)}: no precise BatchNorm statistics; the run "
                            "was made without --precise-bn")
    try:
      return self._manager.restore(epoch, args=ocp.args.Composite(
          **{PRECISE_BN: _restore(batch_stats_template)}))[PRECISE_BN]
    except Exception as e:  # pylint: disable=broad-except
      raise CheckpointError(f"{self._folder(epoch)}: cannot restore its precise BatchNorm "
                            f"statistics ({_cause(e)})") from None

  # A checkpoint in the middle of an epoch, made when a signal stopped the run.

  def _interrupted_folder(self) -> str:
    return os.path.join(self.directory, INTERRUPTED)

  def save_interrupted(self, state, sums, progress: dict) -> None:
    """The state and the epoch's running sums where a stop signal left them, `progress` with
    the epoch and its steps done; written synchronously, complete with checksums on return."""
    self._wait_for_worker()
    self._seal()
    folder = self._interrupted_folder()
    tmp = f"{folder}.tmp"
    try:
      checkpointer = _interrupted_checkpointer()
      checkpointer.save(tmp, args=ocp.args.Composite(
          state=ocp.args.PyTreeSave(_arrays(state)), sums=ocp.args.PyTreeSave(sums),
          progress=ocp.args.JsonSave(progress)), force=True)
      checkpointer.close()
      if jax.process_index() == 0:
        write_checksums(tmp)
        self._clear_interrupted()
        os.rename(tmp, folder)
    except Exception as e:  # pylint: disable=broad-except
      raise CheckpointWriteError(
          f"cannot write the checkpoint of step {int(jax.device_get(state.step).max())} in "
          f"{folder} ({_cause(e)})") from e

  def interrupted_progress(self) -> dict | None:
    """The JSON part (epoch, steps done, history, config) of the checkpoint a stop signal
    left, or None when there is none (or it is damaged: then it is moved aside)."""
    folder = self._interrupted_folder()
    if not os.path.isdir(folder):
      return None
    problem = checksum_problem(folder)
    if problem is None:
      try:
        return _interrupted_checkpointer().restore(
            folder, args=ocp.args.Composite(progress=ocp.args.JsonRestore()))["progress"]
      except Exception as e:  # pylint: disable=broad-except
        problem = f"it cannot be read: {_cause(e)}"
    self._move_aside(folder, problem, "going on from the last epoch's checkpoint")
    return None

  def restore_interrupted(self, state_template, sums_template):
    """`(state, sums, progress)` of the checkpoint a stop signal left, or None when there is
    none (or it is damaged: then it is moved aside)."""
    folder = self._interrupted_folder()
    if not os.path.isdir(folder):
      return None
    problem = checksum_problem(folder)
    if problem is None:
      try:
        restored = _interrupted_checkpointer().restore(
            folder, args=ocp.args.Composite(
                state=_restore(_arrays(state_template)), sums=_restore(sums_template),
                progress=ocp.args.JsonRestore()))
        return (state_template.replace(**restored["state"]), restored["sums"],
                restored["progress"])
      except Exception as e:  # pylint: disable=broad-except
        problem = f"it cannot be read: {_cause(e)}"
    self._move_aside(folder, problem, "going on from the last epoch's checkpoint")
    return None

  def _clear_interrupted(self) -> None:
    folder = self._interrupted_folder()
    if os.path.isdir(folder) and jax.process_index() == 0:
      for root, dirs, names in os.walk(folder, topdown=False):
        for name in names:
          os.remove(os.path.join(root, name))
        for name in dirs:
          os.rmdir(os.path.join(root, name))
      os.rmdir(folder)

  def close(self) -> None:
    """Waits for pending asynchronous saves (their checksums), then releases the manager."""
    try:
      self._wait_for_worker()
      self._seal()
    finally:
      if self._worker is not None:
        self._worker.shutdown()
      self._manager.close()
