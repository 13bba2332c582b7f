"""Orbax checkpoints of the train state plus what a resumed run needs to continue.

A checkpoint is named by the number of completed epochs. With the state's step and
the run's seed, that fixes the next epoch's data order and augmentation keys, so a
resumed run continues exactly where the interrupted one stopped. Orbax writes each
checkpoint to a temporary folder and renames it when complete, so a save cut short
by a crash is never taken for the latest.
"""

import os

import jax
import orbax.checkpoint as ocp


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

  def save(self, epoch: int, state, progress: dict) -> None:
    """Starts an asynchronous save; `progress` is JSON (metrics history, config)."""
    self._manager.save(epoch, args=ocp.args.Composite(
        state=ocp.args.StandardSave(_arrays(state)),
        progress=ocp.args.JsonSave(progress)))

  def restore(self, state_template):
    """`(state, progress)` from the latest checkpoint, in the template's structure."""
    epoch = self.latest_epoch()
    if epoch is None:
      raise CheckpointError(f"{self.directory}: no checkpoint to resume from; run "
                            "without --resume to start training")
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, _arrays(state_template))
    try:
      restored = self._manager.restore(epoch, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract), progress=ocp.args.JsonRestore()))
    except Exception as e:  # orbax raises many types for unreadable checkpoints
      raise CheckpointError(
          f"{os.path.join(self.directory, str(epoch))}: cannot restore the checkpoint "
          f"({type(e).__name__}); delete that folder to fall back to an earlier one, "
          "or start a new run in another --workdir") from None
    return state_template.replace(**restored["state"]), restored["progress"]

  def close(self) -> None:
    """Waits for pending asynchronous saves, then releases the manager."""
    self._manager.wait_until_finished()
    self._manager.close()
