"""Orbax checkpoints of the train state plus what a resumed run needs to continue.

A checkpoint is named by the number of completed epochs. With the state's step and
the run's seed, that fixes the next epoch's data order and augmentation keys, so a
resumed run continues exactly where the interrupted one stopped. A run with
--precise-bn also keeps that epoch's precise BatchNorm statistics beside the state
(`restore_precise_batch_stats`). Orbax writes each
checkpoint to a temporary folder and renames it when complete, so a save cut short
by a crash is never taken for the latest.
"""

import os

import jax
import orbax.checkpoint as ocp


PRECISE_BN = "precise_batch_stats"


class CheckpointError(Exception):
  """A checkpoint that cannot be restored; the message says what to do."""


def _arrays(state) -> dict:
  return {"params": state.params, "batch_stats": state.batch_stats,
          "opt_state": state.opt_state, "step": state.step}


class Checkpointer:

  def __init__(self, directory: str, keep: int = 3):
    self.directory = os.path.abspath(directory)
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))

  def latest_epoch(self) -> int | None:
    return self._manager.latest_step()

  def latest_complete_epoch(self) -> int | None:
    """The latest checkpoint complete on disk (an asynchronous save in flight is not)."""
    self._manager.reload()
    return self._manager.latest_step()

  def save(self, epoch: int, state, progress: dict, precise_batch_stats=None) -> None:
    """Starts an asynchronous save; `progress` is JSON (metrics history, config)."""
    items = {"state": ocp.args.StandardSave(_arrays(state)),
             "progress": ocp.args.JsonSave(progress)}
    if precise_batch_stats is not None:
      items[PRECISE_BN] = ocp.args.StandardSave(precise_batch_stats)
    self._manager.save(epoch, args=ocp.args.Composite(**items))

  def _latest(self) -> int:
    epoch = self.latest_epoch()
    if epoch is None:
      raise CheckpointError(f"{self.directory}: no checkpoint to resume from; run "
                            "without --resume to start training")
    return epoch

  def _restore(self, epoch: int, **items):
    try:
      return self._manager.restore(epoch, args=ocp.args.Composite(**items))
    except Exception as e:  # orbax raises many types for unreadable checkpoints
      raise CheckpointError(
          f"{os.path.join(self.directory, str(epoch))}: cannot restore the checkpoint "
          f"({type(e).__name__}); delete that folder to fall back to an earlier one, "
          "or start a new run in another --workdir") from None

  def restore_progress(self) -> dict:
    """The latest checkpoint's JSON part alone: check it before restoring arrays."""
    return self._restore(self._latest(), progress=ocp.args.JsonRestore())["progress"]

  def epochs(self) -> list[int]:
    """The kept checkpoints, by completed epochs."""
    return sorted(self._manager.all_steps())

  def restore(self, state_template, epoch: int | None = None):
    """`(state, progress)` from the latest checkpoint (or `epoch`'s), in the template's
    structure."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, _arrays(state_template))
    restored = self._restore(self._latest() if epoch is None else epoch,
                             state=ocp.args.StandardRestore(abstract),
                             progress=ocp.args.JsonRestore())
    return state_template.replace(**restored["state"]), restored["progress"]

  def restore_precise_batch_stats(self, batch_stats_template, epoch: int | None = None):
    """The precise BatchNorm statistics of a --precise-bn run (latest epoch by default),
    in the structure of the template (a state's `batch_stats`)."""
    epoch = self._latest() if epoch is None else epoch
    if PRECISE_BN not in self._manager.item_metadata(epoch):
      raise CheckpointError(f"{os.path.join(self.directory, str(epoch))}: no precise "
                            "BatchNorm statistics; the run was made without --precise-bn")
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, batch_stats_template)
    return self._restore(epoch, **{PRECISE_BN: ocp.args.StandardRestore(abstract)})[PRECISE_BN]

  def close(self) -> None:
    """Waits for pending asynchronous saves, then releases the manager."""
    self._manager.wait_until_finished()
    self._manager.close()
