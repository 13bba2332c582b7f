"""Data parallelism over 4 CPU "devices" (XLA_FLAGS in a subprocess, so nothing leaks)."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings

import pytest

from conftest import ROOT, assert_events_are_metrics, assert_trees_equal, restore_run
from tolerance import EPS32, SAME_ROUNDING_FACTOR
from mnist_jax import Config, Execution, checkpointing, input_pipeline, train_and_evaluate

FOUR_DEVICES = dict(os.environ, PYTHONPATH=str(ROOT),
                    XLA_FLAGS="--xla_force_host_platform_device_count=4")

# Runs in a 4-device process: a few steps of the trainer's own step on a 1-device mesh
# and on a 4-device mesh, from the same state and data, and once more on one device in
# float64 as the yardstick of float32 rounding. SGD, because Adam's first steps are
# lr * sign(g): a pre-BatchNorm bias's gradient, zero but for rounding, would turn
# summation-order noise into full-size updates.
STEPS_SCRIPT = """
import functools, json, sys
import jax
jax.config.update("jax_enable_x64", True)  # for the float64 yardstick; the others stay float32
import jax.numpy as jnp, numpy as np, optax
from mnist_jax import Config, TinyNet, TrainState, create_train_state, data, input_pipeline, parallel, epoch

assert jax.device_count() == 4
mnist = data.load_mnist(sys.argv[1])
split = data.Split(mnist["train"].images[:1000], mnist["train"].labels[:1000])
base = create_train_state(jax.random.key(0), TinyNet(), Config(batch_size=200), 5)
diff = lambda a, b: max(float(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64)).max())
                        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
results = {}
for n, dtype in ((1, jnp.float32), (4, jnp.float32), (1, jnp.float64)):
  cast = lambda tree: jax.tree.map(lambda v: jnp.asarray(v, dtype), tree)
  start = TrainState.create(apply_fn=base.apply_fn, params=cast(base.params),
                            batch_stats=cast(base.batch_stats), tx=optax.sgd(0.05))
  mesh = parallel.make_mesh(jax.devices()[:n])
  rep = parallel.replicated(mesh)
  split_d = input_pipeline.to_device(split, mesh)
  order = jax.device_put(input_pipeline.shuffled_order(jax.random.key(1), 1000, 200), rep)
  step = jax.jit(functools.partial(epoch.train_batch, steps_per_epoch=5, batch_size=200,
                                   augment=True, mesh=mesh), in_shardings=rep, out_shardings=rep)
  state, sums = jax.device_put(start, rep), jax.device_put(epoch.zero_sums(), rep)
  for _ in range(5):
    state, sums = step(state, sums, split_d, order, jax.device_put(jax.random.key(2), rep))
  results[n, dtype] = jax.device_get((state.params, state.batch_stats,
                                      sums["loss_sum"] / sums["count"]))
  if dtype == jnp.float32:
    batch = jax.jit(lambda s, o: parallel.shard_batch(
        input_pipeline.get_batch(s, o, 0, 200), mesh))(split_d, order)
    results[f"shards_{n}"] = [list(s.data.shape) for s in batch["image"].addressable_shards]
    hlo = step.lower(state, sums, split_d, order, jax.random.key(2)).compile().as_text()
    results[f"all_reduce_{n}"] = "all-reduce" in hlo

one, four, exact = results[1, jnp.float32], results[4, jnp.float32], results[1, jnp.float64]
print(json.dumps({
    **{f"{name}_four_vs_exact": diff(four[i], exact[i]) for i, name in enumerate(("params", "batch_stats", "loss"))},
    **{f"{name}_one_vs_exact": diff(one[i], exact[i]) for i, name in enumerate(("params", "batch_stats", "loss"))},
    **{f"{name}_scale": max(float(np.abs(x).max()) for x in jax.tree.leaves(one[i]))
       for i, name in enumerate(("params", "batch_stats", "loss"))},
    "moved": diff(base.params, four[0]),
    "shards_1": results["shards_1"], "shards_4": results["shards_4"],
    "all_reduce_4": results["all_reduce_4"],
}))
"""


@pytest.mark.slow
def test_four_devices_compute_what_one_does(mnist_dir):
  result = subprocess.run([sys.executable, "-c", STEPS_SCRIPT, mnist_dir], env=FOUR_DEVICES,
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr
  out = json.loads(result.stdout.strip().splitlines()[-1])
  assert out["moved"] > 1e-3  # the steps did train
  # Splitting the batch reorders float32 sums and nothing else, so the 4-device result must
  # be as accurate as the 1-device one, measured against the float64 run (tolerance.py).
  for name in ("params", "batch_stats", "loss"):
    tolerance = (SAME_ROUNDING_FACTOR * out[f"{name}_one_vs_exact"]
                 + 4 * EPS32 * out[f"{name}_scale"])
    assert out[f"{name}_four_vs_exact"] <= tolerance, (name, out)
  # The global batch of 200 is split 4 ways: each device holds and computes 50 examples.
  assert out["shards_1"] == [[200, 28, 28, 1]]
  assert out["shards_4"] == [[50, 28, 28, 1]] * 4
  assert out["all_reduce_4"]  # gradients and BatchNorm statistics over the global batch


def _config(epochs):
  return Config(batch_size=128, num_epochs=epochs, num_train_examples=512,
                num_test_examples=1000, learning_rate=0.01)


def _execution(mnist_dir):
  return Execution(data_dir=mnist_dir, show_progress=False)


RUN_SCRIPT = """
import sys
from mnist_jax import Config, Execution, train_and_evaluate
config = Config(batch_size=128, num_epochs=int(sys.argv[2]), num_train_examples=512,
                num_test_examples=1000, learning_rate=0.01)
train_and_evaluate(config, sys.argv[3], Execution(data_dir=sys.argv[1], show_progress=False),
                   resume=sys.argv[4] == "resume")
"""


def _start_on_four(mnist_dir, epochs, workdir, resume) -> subprocess.Popen:
  return subprocess.Popen(
      [sys.executable, "-c", RUN_SCRIPT, mnist_dir, str(epochs), str(workdir),
       "resume" if resume else "new"],
      env=FOUR_DEVICES, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait(proc: subprocess.Popen):
  _, err = proc.communicate(timeout=600)
  assert proc.returncode == 0, err


def _restore(workdir, epochs):
  return restore_run(workdir, _config(epochs))


@pytest.mark.slow
def test_checkpoints_move_between_device_counts(tmp_path, mnist_dir):
  # Written on 4 devices (in another process, while this one trains the run below on 1),
  # restored and continued on 1.
  on_four = _start_on_four(mnist_dir, 1, tmp_path / "four", resume=False)
  first = train_and_evaluate(_config(1), str(tmp_path / "one"), _execution(mnist_dir))
  _wait(on_four)
  state, progress = _restore(tmp_path / "four", 1)
  assert int(state.step) == 4 and len(progress["history"]) == 1
  resumed = train_and_evaluate(_config(2), str(tmp_path / "four"), _execution(mnist_dir),
                               resume=True)
  assert int(resumed.step) == 8

  # Written on 1 device, continued on 4. Epoch 1 is carried over as written; epoch 2 goes
  # on from it (a fresh start would not lower the loss). Its numbers are not compared with
  # the run above: Adam turns summation-order rounding in the pre-BatchNorm biases into
  # full-size updates, and no tolerance follows from that; the 4-device step itself is
  # checked against one device above.
  written = json.loads((tmp_path / "one" / "metrics.jsonl").read_text())
  _wait(_start_on_four(mnist_dir, 2, tmp_path / "one", resume=True))
  on_four, progress = _restore(tmp_path / "one", 2)
  assert int(first.step) == 4 and int(on_four.step) == 8 and len(progress["history"]) == 2
  # (The line on file ends with the process's phases, which the checkpoint cannot hold.)
  assert progress["history"][0] == {k: v for k, v in written.items() if k != "phases_seconds"}
  assert progress["history"][1]["train_loss"] < written["train_loss"]


# ---- two hosts (jax.distributed, CPU collectives through gloo) ----

TRAIN = [sys.executable, str(ROOT / "train.py")]
HOST_RUN = ["--epochs", "2", "--train-examples", "4096", "--test-examples", "1000",
            "--batch-size", "256", "--lr", "0.01", "--no-progress"]
HEARTBEAT_TIMEOUT_S = 20  # the run's bound on noticing a silent process


def _free_loopback_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _netns(*args):
  subprocess.run(["ip", *map(str, args)], check=True, capture_output=True, timeout=30)


@pytest.fixture
def two_hosts():
  """Two hosts: two network namespaces joined by a veth pair (root), each with its own
  address, which the host's name resolves to inside it as on a real host (gloo finds its
  peers by host name). Without them, two processes on the loopback, and a warning why."""
  name = f"mnist-jax-{os.getpid()}"
  namespaces, addresses = [f"{name}-0", f"{name}-1"], ["10.231.0.1", "10.231.0.2"]
  try:
    if os.geteuid() != 0:
      raise PermissionError("needs root")
    for ns, address in zip(namespaces, addresses):
      os.makedirs(f"/etc/netns/{ns}", exist_ok=True)  # `ip netns exec` mounts it on /etc
      with open(f"/etc/netns/{ns}/hosts", "w", encoding="utf-8") as f:
        f.write(f"127.0.0.1 localhost\n{address} {socket.gethostname()}\n")
      _netns("netns", "add", ns)
      _netns("-n", ns, "link", "set", "lo", "up")
    _netns("link", "add", "mjx0", "type", "veth", "peer", "name", "mjx1")
    for i, (ns, address) in enumerate(zip(namespaces, addresses)):
      _netns("link", "set", f"mjx{i}", "netns", ns)
      _netns("-n", ns, "addr", "add", f"{address}/24", "dev", f"mjx{i}")
      _netns("-n", ns, "link", "set", f"mjx{i}", "up")
    yield [(["ip", "netns", "exec", ns], address) for ns, address in zip(namespaces, addresses)]
  except (OSError, subprocess.SubprocessError) as e:
    reason = getattr(e, "stderr", b"") or str(e)
    if os.environ.get("CI"):  # CI runs as root with iproute2: the real two hosts or a failure
      pytest.fail(f"no network namespaces in CI: {reason!r}")
    warnings.warn(f"no network namespaces ({reason!r}): the two hosts share the loopback")
    yield [([], "127.0.0.1")] * 2
  finally:
    for ns in namespaces:
      subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
      shutil.rmtree(f"/etc/netns/{ns}", ignore_errors=True)


def _train(args, devices, prefix=(), **popen):
  env = dict(os.environ, JAX_NUM_CPU_DEVICES=str(devices))
  return subprocess.Popen([*prefix, *TRAIN, *map(str, args)], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, **popen)


def _finish(procs, timeout_s=300):
  """Each process's (returncode, stdout, stderr); kills all of them at the deadline."""
  deadline, outs = time.monotonic() + timeout_s, []
  try:
    for p in procs:
      out, err = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
      outs.append((p.returncode, out, err))
  finally:
    for p in procs:
      p.kill()
  return outs


def _wait_for(condition, procs, what, timeout_s=300):
  """Polls `condition()` while every process of `procs` runs."""
  deadline = time.monotonic() + timeout_s
  while not condition():
    assert all(p.poll() is None for p in procs) and time.monotonic() < deadline, (
        what, _finish(procs))
    time.sleep(0.02)


def _rewritten(path):
  """A condition: `path` was written again since now (the trainer rewrites config.json once
  a run has restored its checkpoint and built its programs, just before its first step)."""
  before = path.stat().st_mtime_ns
  return lambda: path.stat().st_mtime_ns != before


@pytest.mark.slow
def test_two_hosts_lose_a_process_twice_and_stop_once_then_end_as_one_process(tmp_path,
                                                                               mnist_dir,
                                                                               two_hosts):
  """Two hosts train as one process with two devices, through three faults, each resumed:
  process 1 killed as epoch 1's checkpoint completes; SIGTERM to process 1 alone at the
  start of epoch 2 (both stop at the same step, save it, exit 6); process 0, the
  coordinator, killed in the middle of epoch 2. A lost process's peer exits 4 within the
  heartbeat bound with one line naming it. The run then ends bit for bit where the
  uninterrupted run ends."""
  hosts, one = tmp_path / "two_hosts", tmp_path / "one_process"

  def start_hosts(*extra):
    port = 12355 if two_hosts[0][0] else _free_loopback_port()  # a new namespace's ports are free
    cluster = ["--coordinator-address", f"{two_hosts[0][1]}:{port}", "--num-processes", 2,
               "--heartbeat-timeout", HEARTBEAT_TIMEOUT_S]
    return [_train(["--data-dir", mnist_dir, "--workdir", hosts, *HOST_RUN, *cluster,
                    "--process-id", i, *extra], devices=1, prefix=prefix)
            for i, (prefix, _) in enumerate(two_hosts)]

  def lose(procs, victim, epoch_kept):
    """Kills process `victim`; its peer ends within the heartbeat bound. Process 1 lost: exit
    4 and one line naming it. Process 0 lost: it ran JAX's coordination service, and JAX
    ends the peer itself (SIGABRT, "Terminating process because the JAX distributed service
    detected fatal errors") unless the peer's own collective fails first, which is then
    reported as for process 1. Either way nothing is written after the kill."""
    procs[victim].kill()
    killed_at = time.monotonic()
    (rc, out, err), = _finish([procs[1 - victim]], timeout_s=HEARTBEAT_TIMEOUT_S + 60)
    exit_s = time.monotonic() - killed_at
    assert exit_s < HEARTBEAT_TIMEOUT_S, (rc, exit_s, err[-3000:])
    if victim == 0 and rc == -signal.SIGABRT:
      assert "Terminating process because the JAX distributed service detected fatal errors" in err
      return out
    assert rc == 4, (rc, err[-3000:])
    assert re.fullmatch(
        rf"train\.py: error: lost process {victim} \({re.escape(two_hosts[victim][1])}\) of 2: "
        rf".*; the last complete checkpoint \(epoch {epoch_kept}\) is kept in "
        rf"{re.escape(str(hosts))}/checkpoints; start every process again with --resume",
        err.strip().splitlines()[-1]), err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    return out

  procs = start_hosts()
  uninterrupted = _train(["--data-dir", mnist_dir, "--workdir", one, *HOST_RUN], devices=2)
  _wait_for((hosts / "checkpoints" / "1").is_dir, procs, "epoch 1's checkpoint")
  out = lose(procs, victim=1, epoch_kept=1)  # orbax renames a checkpoint once complete
  assert "epoch   1" in out and "epoch   2" not in out  # killed in epoch 2
  assert len((hosts / "metrics.jsonl").read_text().splitlines()) == 1

  procs = start_hosts("--resume")
  _wait_for(_rewritten(hosts / "config.json"), procs, "the resumed run's start")
  procs[1].send_signal(signal.SIGTERM)  # a preempted host: the other is told nothing
  stopped = _finish(procs)
  lines = [err.strip().splitlines()[-1] for _, _, err in stopped]
  assert [rc for rc, _, _ in stopped] == [6, 6] and lines[0] == lines[1].replace(
      "SIGTERM", "a stop signal"), [err[-3000:] for _, _, err in stopped]
  done = int(re.fullmatch(
      rf"train\.py: SIGTERM: stopped after step (\d+) of 16 in epoch 2; a checkpoint of it is "
      rf"kept in {re.escape(str(hosts))}/checkpoints; run again with --resume to continue "
      "from it", lines[1]).group(1))
  assert 0 < done < 16

  procs = start_hosts("--resume")
  _wait_for(_rewritten(hosts / "config.json"), procs, "the resumed run's start")
  time.sleep(0.3)  # a few of epoch 2's steps
  lose(procs, victim=0, epoch_kept=1)

  resumed = _finish(start_hosts("--resume"))
  [(rc_one, _, err_one)] = _finish([uninterrupted])
  assert rc_one == 0, err_one[-3000:]
  assert all(rc == 0 for rc, _, _ in resumed), [err[-3000:] for _, _, err in resumed]
  assert "epoch   2" in resumed[0][1] and "done" in resumed[0][1]
  for words in ("run folder", "epoch", "done"):  # process 1 reports nothing of its own
    assert words not in resumed[1][1], resumed[1][1]
  assert not any("[Gloo]" in out for _, out, _ in resumed)  # gloo's connection lines: not ours
  assert sorted(os.listdir(hosts)) == [".lock", "checkpoints", "config.json", "metrics.jsonl",
                                       "model_summary.txt", "tensorboard", "training_curves.png"]
  assert_events_are_metrics(hosts)  # process 0's, each epoch once through three restarts
  assert not (hosts / "checkpoints" / checkpointing.INTERRUPTED).exists()  # now past

  # Both meshes have two devices, each computing the same 128-example half of every batch
  # with the same program; only the all-reduce differs (gloo between processes, shared
  # memory within one), and a sum of two operands is exact in either order: a + b == b + a.
  # So the derived tolerance is zero: bit for bit, the resumed run as the uninterrupted one.
  config = Config(batch_size=256, learning_rate=0.01, num_epochs=2)
  steps = input_pipeline.num_batches(4096, 256)
  (a, progress_a), (b, progress_b) = (restore_run(w, config) for w in (hosts, one))
  assert_trees_equal((a.params, a.batch_stats, a.opt_state, a.step),
                     (b.params, b.batch_stats, b.opt_state, b.step))
  assert int(a.step) == 2 * steps
  untimed = lambda h: [{k: v for k, v in r.items() if not k.endswith(("seconds", "second"))}
                       for r in h]
  assert untimed(progress_a["history"]) == untimed(progress_b["history"])

  # The two-host checkpoint continues in a single process.
  [(rc, out, err)] = _finish([_train(["--data-dir", mnist_dir, "--workdir", hosts, *HOST_RUN,
                                      "--epochs", 3, "--resume"], devices=2)])
  assert rc == 0, err
  continued, progress = restore_run(hosts, config.replace(num_epochs=3))
  assert int(continued.step) == 3 * steps and len(progress["history"]) == 3
