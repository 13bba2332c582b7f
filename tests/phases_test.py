"""The phase clock (mnist_jax/phases.py): phases add up to the time that passed, and JAX's
compilations are taken out of the phase that met them, whichever it is."""

import time

import jax
import jax.numpy as jnp
import pytest

from mnist_jax import phases as phases_lib


def test_a_compilation_is_moved_out_of_the_phase_that_met_it():
  clock = phases_lib.Phases("before", from_process_start=False)
  clock.listen_to_jax()
  try:
    started = time.time()
    time.sleep(0.05)
    clock.enter("work")
    # A program no other test compiles (its shape), then run again: one compilation only.
    f = jax.jit(lambda x: jnp.tanh(x @ x.T).sum())
    x = jnp.ones((37, 53), jnp.float32)
    f(x).block_until_ready()
    f(x).block_until_ready()
    time.sleep(0.05)
    report = clock.report()
    elapsed = time.time() - started
  finally:
    clock.stop_listening()
  assert sorted(report) == ["before", "compilation", "total", "work"]
  assert report["before"] >= 0.05 and report["work"] >= 0.05 and report["compilation"] > 0
  parts = sum(v for k, v in report.items() if k != "total")
  assert report["total"] == pytest.approx(parts, abs=0.002)  # each part rounded to 1 ms
  assert report["total"] <= elapsed + 0.002
  # Listening stopped: a new compilation is left where it happens.
  clock.enter("after")
  jax.jit(lambda x: x * 3)(jnp.ones((41,))).block_until_ready()
  assert clock.report()["compilation"] == report["compilation"]


def test_overlapping_and_nested_spans_count_once_and_only_inside_the_phase():
  spans = [(1.0, 3.0), (1.5, 2.0), (2.5, 4.0), (6.0, 7.0), (-1.0, 0.5)]
  assert phases_lib._union_within(spans, 0.0, 5.0) == pytest.approx(0.5 + 3.0)
  assert phases_lib._union_within(spans, 2.0, 6.5) == pytest.approx(2.0 + 0.5)
  assert phases_lib._union_within([], 0.0, 1.0) == 0


def test_the_summary_line_lists_the_largest_phases_first():
  line = phases_lib.summary_line({"start": 0.1, "training": 8.04, "compilation": 1.2,
                                  "total": 9.34})
  assert line == "time: 9.3 s = training 8.0 + compilation 1.2 + start 0.1"
