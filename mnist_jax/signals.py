"""Stop signals: SIGTERM (a batch scheduler, a preemptible machine, `docker stop`) and SIGINT
(Ctrl-C) ask a run to stop at its next step boundary, where the trainer saves a checkpoint
of that step; a second signal stops the process at once. In a multi-process run every
process stops at the same step: they agree after each device program (one small collective
of the processes' flags, the only per-step host synchronisation such a run has).
"""

import os
import signal
import sys
import threading

import jax
import numpy as np
from jax.experimental import multihost_utils

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequests:
  """A context in which SIGTERM and SIGINT are requests to stop (outside the main thread,
  where Python cannot take signals, it asks nothing). `requested()` says whether to stop now."""

  def __init__(self):
    self.signal: str | None = None  # the first signal's name, once one came
    self._previous = {}

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      self._previous = {s: signal.signal(s, self._handle) for s in SIGNALS}
    return self

  def __exit__(self, *exc_info):
    for s, handler in self._previous.items():
      signal.signal(s, handler)

  def _handle(self, signum, frame):
    del frame
    name = signal.Signals(signum).name
    if self.signal is not None:
      print(f"{name} again: stopped at once, the last complete checkpoint is kept",
            file=sys.stderr, flush=True)
      os._exit(128 + signum)  # pylint: disable=protected-access
    self.signal = name
    print(f"{name}: stopping after the step in flight to save a checkpoint of it (send it "
          "again to stop at once)", file=sys.stderr, flush=True)

  def requested(self) -> bool:
    asked = self.signal is not None
    if jax.process_count() > 1:  # any process asked: all stop here
      asked = bool(np.asarray(multihost_utils.process_allgather(np.int32(asked))).any())
    return asked
