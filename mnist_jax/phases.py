"""Where a run's time goes: the process's wall time, from its start, cut into named phases
that add up to it (metrics.jsonl's `phases_seconds` and the run's last console line).

The code says which phase it is in (`Phases.enter`); JAX's compilations are taken out of
whichever phase met them (jit compiles at a program's first call) and counted as
"compilation": JAX reports each tracing, lowering and XLA compilation (or persistent-cache
load) as a time span (`jax.monitoring`), and their union is what the phase gives up.
"""

import os
import time

# JAX's time spans of making a program: tracing to a jaxpr, lowering it, and XLA's compile
# or the persistent cache's load (jax/_src/dispatch.py).
COMPILE_EVENTS = frozenset({"/jax/core/compile/jaxpr_trace_duration",
                            "/jax/core/compile/jaxpr_to_mlir_module_duration",
                            "/jax/core/compile/backend_compile_duration"})
COMPILATION = "compilation"


def seconds_since_process_start() -> float | None:
  """How long this process has run (Linux: from /proc; None elsewhere)."""
  try:
    with open("/proc/self/stat") as f:  # field 22: start time, in clock ticks after boot
      started = int(f.read().rsplit(")", 1)[1].split()[19]) / os.sysconf("SC_CLK_TCK")
    with open("/proc/uptime") as f:
      return float(f.read().split()[0]) - started
  except (OSError, ValueError, IndexError):
    return None


def _union_within(spans: list[tuple[float, float]], start: float, end: float) -> float:
  """The length of the union of `spans` clipped to [start, end] (nested spans count once)."""
  total, reached = 0.0, start
  for a, b in sorted(spans):
    a, b = max(a, reached), min(b, end)
    if b > a:
      total, reached = total + b - a, b
  return total


class Phases:
  """A clock of named phases. The first, "start", runs from the process's start (the
  interpreter and the first imports) when `from_process_start`, else from now."""

  def __init__(self, first: str = "start", from_process_start: bool = True):
    now = time.time()
    since_start = seconds_since_process_start() if from_process_start else None
    self.seconds: dict[str, float] = {}
    self._name, self._since = first, now - (since_start or 0.0)
    self._spans: list[tuple[float, float]] = []
    self._listening = False

  def listen_to_jax(self) -> None:
    """From now on, JAX's compilations are counted apart (call once JAX is imported)."""
    import jax  # pylint: disable=import-outside-toplevel
    if not self._listening:
      jax.monitoring.register_event_time_span_listener(self._on_span)
      self._listening = True

  def stop_listening(self) -> None:
    import jax  # pylint: disable=import-outside-toplevel
    if self._listening:
      jax.monitoring.unregister_event_time_span_listener(self._on_span)
      self._listening = False

  def _on_span(self, event: str, start_time: float, end_time: float, **kwargs) -> None:
    del kwargs
    if event in COMPILE_EVENTS:
      self._spans.append((start_time, end_time))

  def enter(self, name: str) -> None:
    """Ends the phase in progress and starts `name` (entering one again adds to it)."""
    now = time.time()
    compiling = _union_within(self._spans, self._since, now)
    self._spans = [(a, b) for a, b in self._spans if b > now]
    self._add(self._name, now - self._since - compiling)
    self._add(COMPILATION, compiling)
    self._name, self._since = name, now

  def _add(self, name: str, seconds: float) -> None:
    if seconds > 0:
      self.seconds[name] = self.seconds.get(name, 0.0) + seconds

  def report(self) -> dict[str, float]:
    """The phases so far (the one in progress up to now), in the order they first came,
    rounded to milliseconds, and their `total`."""
    self.enter(self._name)
    done = {name: round(seconds, 3) for name, seconds in self.seconds.items()}
    return {**done, "total": round(sum(self.seconds.values()), 3)}


def summary_line(report: dict[str, float]) -> str:
  """`time: 12.3 s = training 8.1 + evaluation 1.2 + ...`, the largest phases first."""
  parts = sorted(((s, n) for n, s in report.items() if n != "total"), reverse=True)
  return f"time: {report['total']:.1f} s = " + " + ".join(f"{n} {s:.1f}" for s, n in parts)


class StepTrace:
  """`--profile DIR`: a `jax.profiler` trace of a few training programs, those right after the
  first (whose compilation would fill the trace): on the CPU, where a program is one step, 5
  steps; on an accelerator, where a program is an epoch, the second epoch. TensorBoard's
  profile plugin opens DIR (`tensorboard --logdir DIR`); Perfetto (ui.perfetto.dev) opens the
  `perfetto_trace.json.gz` beside it. `after_chunk()` is called after every program."""

  def __init__(self, folder: str | None, programs: int = 5):
    self.folder, self._programs, self._seen, self._tracing = folder, programs, 0, False

  def after_chunk(self) -> None:
    if self.folder is None:
      return
    import jax  # pylint: disable=import-outside-toplevel
    self._seen += 1
    if self._seen == 1:
      jax.profiler.start_trace(self.folder, create_perfetto_trace=True)
      self._tracing = True
    elif self._seen == 1 + self._programs:
      self.close()

  def close(self) -> None:
    """Ends the trace (waiting for the traced programs); a no-op when none is running."""
    if self._tracing:
      import jax  # pylint: disable=import-outside-toplevel
      jax.effects_barrier()
      jax.profiler.stop_trace()
      self._tracing = False
