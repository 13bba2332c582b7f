"""Faults on disk and signals as a user meets them: real orbax files with bits flipped or cut
short, a real filesystem that fills up, real signals to train.py. Each ends in one line and a
documented exit status (docs/usage.md "When things fail"), and loses nothing that was complete."""

import os
import re
import shutil
import signal
import subprocess
import time

import jax
import numpy as np
import pytest

from conftest import assert_events_are_metrics, assert_trees_equal, restore_run
from mnist_jax import Config, TinyNet, checkpointing, create_train_state
from train_cli_test import TRAIN, metrics, run

# ---- checksums: a damaged checkpoint is never restored, the newest intact one is ----


@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory):
  """A folder with the checkpoints of epochs 1 and 2 of a TinyNet state (2 differs: one step
  more), complete with checksums."""
  folder = tmp_path_factory.mktemp("checkpoints") / "checkpoints"
  state = create_train_state(jax.random.key(0), TinyNet(), Config(), steps_per_epoch=1)
  checkpointer = checkpointing.Checkpointer(str(folder))
  checkpointer.save(1, state, {"history": [1]})
  checkpointer.save(2, state.replace(step=state.step + 1), {"history": [1, 2]})
  checkpointer.close()
  return folder, state


def _restored(folder, template):
  notes = []
  checkpointer = checkpointing.Checkpointer(str(folder), report=notes.append)
  try:
    state, progress = checkpointer.restore(template)
    return state, progress, checkpointer.restored_epoch, notes
  finally:
    checkpointer.close()


def test_an_intact_checkpoint_restores_with_its_checksums(two_checkpoints, tmp_path):
  folder, template = two_checkpoints
  copy = shutil.copytree(folder, tmp_path / "checkpoints")
  assert (copy / "2" / checkpointing.CHECKSUMS).is_file()
  state, progress, epoch, notes = _restored(copy, template)
  assert (epoch, progress["history"], int(state.step), notes) == (2, [1, 2], 1, [])


def _flip_bit(path, position: float):
  with open(path, "r+b") as f:
    size = f.seek(0, os.SEEK_END)
    offset = min(size - 1, int(position * size))
    f.seek(offset)
    byte = f.read(1)[0]
    f.seek(offset)
    f.write(bytes([byte ^ 0x10]))


@pytest.mark.parametrize("position", [0.0, 0.5, 1.0])
def test_a_flipped_bit_anywhere_in_the_latest_is_never_restored(two_checkpoints, tmp_path,
                                                                  position):
  """One bit flipped at the start, middle or end of each file of epoch 2's checkpoint in
  turn (arrays, metadata, its checksums): epoch 1's is restored instead, with one note
  naming both, and epoch 2's is kept aside as damaged-2."""
  folder, template = two_checkpoints
  files = sorted(str(p.relative_to(folder / "2")) for p in (folder / "2").rglob("*") if p.is_file())
  assert len(files) > 5
  for name in files:
    copy = tmp_path / name.replace("/", "_")
    shutil.copytree(folder, copy)
    _flip_bit(copy / "2" / name, position)
    state, progress, epoch, notes = _restored(copy, template)
    assert (epoch, progress["history"], int(state.step)) == (1, [1], 0), name
    assert not (copy / "2").exists() and (copy / "damaged-2" / name).is_file(), name
    assert len(notes) == 1 and "/2: damaged (" in notes[0] and "damaged-2" in notes[0] \
        and "trying epoch 1's" in notes[0], (name, notes)


def test_when_every_checkpoint_is_damaged_the_error_says_so_and_keeps_them(two_checkpoints,
                                                                           tmp_path):
  folder, template = two_checkpoints
  copy = shutil.copytree(folder, tmp_path / "checkpoints")
  for path in copy.rglob("*"):
    if path.is_file():
      path.write_bytes(b"garbage")  # every file cut short and overwritten
  with pytest.raises(checkpointing.CheckpointError, match="no intact checkpoint is left"):
    _restored(copy, template)
  assert sorted(os.listdir(copy)) == ["damaged-1", "damaged-2"]


def test_a_checkpoint_holds_the_state_it_was_given_though_the_next_step_takes_its_buffers(
    tmp_path):
  """A single-process run's save is written by a worker thread while the next epoch trains,
  and that epoch's first step donates the state's buffers (deletes the arrays `save` was
  given): the checkpoint must still be that state, complete with checksums."""
  new_state = lambda: create_train_state(jax.random.key(0), TinyNet(), Config(), steps_per_epoch=1)
  step = jax.jit(lambda s: s.replace(params=jax.tree.map(lambda x: x - 1, s.params),
                                     step=s.step + 1), donate_argnums=0)
  step(new_state())  # compiled now: below, the donation comes at once
  state = new_state()
  given = jax.tree.map(np.array, state)  # copies: a view of a buffer would keep it from donation
  checkpointer = checkpointing.Checkpointer(str(tmp_path / "checkpoints"))
  checkpointer.save(1, state, {"history": [1]})
  after = step(state)  # at once, as the training loop does
  assert jax.tree.leaves(state.params)[0].is_deleted()
  checkpointer.close()
  assert checkpointing.checksum_problem(str(tmp_path / "checkpoints" / "1")) is None
  restored, progress, epoch, notes = _restored(tmp_path / "checkpoints", after)
  assert (epoch, progress, notes) == (1, {"history": [1]}, [])
  assert_trees_equal((restored.params, restored.opt_state, restored.step),
                     (given.params, given.opt_state, given.step))


# ---- train.py: a damaged latest checkpoint, a stop signal, a full disk, a divergence ----

SMALL = ["--train-examples", 1024, "--test-examples", 500, "--batch-size", 256, "--lr", 0.01,
         "--no-progress"]


def test_resume_falls_back_past_a_damaged_checkpoint(tmp_path, mnist_dir):
  workdir = tmp_path / "run"
  assert run(["--data-dir", mnist_dir, "--epochs", 2, *SMALL, "--workdir", workdir]).returncode == 0
  for path in (workdir / "checkpoints" / "2").rglob("*"):
    if path.is_file():
      path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])  # every file truncated
  resumed = run(["--data-dir", mnist_dir, "--epochs", 2, *SMALL, "--workdir", workdir, "--resume"])
  assert resumed.returncode == 0, resumed.stderr
  notes = resumed.stderr.strip().splitlines()
  assert len(notes) == 1 and "checkpoints/2: damaged" in notes[0] \
      and "trying epoch 1's" in notes[0], notes
  assert (workdir / "checkpoints" / "damaged-2").is_dir()
  assert [r["epoch"] for r in metrics(workdir)] == [1, 2]  # epoch 2 trained again
  assert checkpointing.checksum_problem(str(workdir / "checkpoints" / "2")) is None


@pytest.mark.slow
def test_sigterm_mid_epoch_saves_that_step_and_resume_is_the_uninterrupted_run(tmp_path,
                                                                               mnist_dir):
  """SIGTERM during epoch 2: exit 6 after a checkpoint of the step in flight; `--resume`
  ends bit for bit where the uninterrupted run ends (params, statistics, Adam state, step,
  metrics): the epoch's order and keys are functions of seed, epoch and step."""
  flags = ["--data-dir", mnist_dir, "--epochs", "2", "--train-examples", "8192",
           "--test-examples", "500", "--batch-size", "256", "--lr", "0.01", "--no-progress"]
  stopped, straight = tmp_path / "stopped", tmp_path / "straight"
  proc = subprocess.Popen([*TRAIN, *flags, "--workdir", str(stopped)], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 600
  while not (stopped / "metrics.jsonl").exists() and time.time() < deadline:
    assert proc.poll() is None, proc.communicate()[1]
    time.sleep(0.05)
  time.sleep(0.3)  # some of epoch 2's 32 steps (~50 ms each on 2 cores)
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=600)
  assert proc.returncode == 6, err
  last = err.strip().splitlines()[-1]
  done = int(re.search(r"SIGTERM: stopped after step (\d+) of 32 in epoch 2; a checkpoint", last)
             .group(1))
  assert 0 < done < 32 and "Traceback" not in err, err
  assert (stopped / "checkpoints" / checkpointing.INTERRUPTED).is_dir()
  assert not (stopped / "checkpoints" / "2").exists()

  uninterrupted = subprocess.Popen([*TRAIN, *flags, "--workdir", str(straight)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  resumed = run([*flags, "--workdir", stopped, "--resume"])
  assert resumed.returncode == 0, resumed.stderr
  assert uninterrupted.wait(timeout=600) == 0, uninterrupted.stderr.read()
  config = Config(batch_size=256, learning_rate=0.01, num_epochs=2)
  (a, _), (b, _) = (restore_run(w, config) for w in (straight, stopped))
  assert_trees_equal((a.params, a.batch_stats, a.opt_state, a.step),
                     (b.params, b.batch_stats, b.opt_state, b.step))
  assert metrics(straight) == metrics(stopped)
  assert_events_are_metrics(stopped)
  assert not (stopped / "checkpoints" / checkpointing.INTERRUPTED).exists()  # now past


def test_a_full_disk_ends_in_one_line_keeps_the_last_checkpoint_and_resumes(tmp_path, mnist_dir):
  """The run folder on a 600 kB tmpfs: epoch 1's checkpoint (about 340 kB) fits, epoch 2's
  does not. One line, exit 5, epoch 1's checkpoint intact; with room again, `--resume`
  continues and clears the half-written one."""
  if os.geteuid() != 0 or not shutil.which("mount"):
    pytest.skip("mounting a small tmpfs needs root")  # CI runs as root
  small = tmp_path / "small"
  small.mkdir()
  subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(small)], check=True)
  try:
    flags = ["--data-dir", mnist_dir, "--epochs", 2, *SMALL, "--workdir", small / "run"]
    result = run(flags)
    assert result.returncode == 5, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "No space left on device" in lines[0] or "RESOURCE_EXHAUSTED" in lines[0], lines[0]
    assert "the checkpoint of epoch 1 is kept" in lines[0] and "--resume" in lines[0], lines[0]
    assert checkpointing.checksum_problem(str(small / "run" / "checkpoints" / "1")) is None
    subprocess.run(["mount", "-o", "remount,size=16m", str(small)], check=True)
    resumed = run([*flags, "--resume"])
    assert resumed.returncode == 0, resumed.stderr
    assert [r["epoch"] for r in metrics(small / "run")] == [1, 2]
    assert sorted(os.listdir(small / "run" / "checkpoints")) == ["1", "2"]  # no leftover
  finally:
    subprocess.run(["umount", "-l", str(small)], check=False)


def test_divergence_in_epoch_2_keeps_epoch_1_and_in_epoch_1_leaves_a_usable_folder(tmp_path,
                                                                                    mnist_dir):
  """Net at lr 1e6, one step per epoch: epoch 1's loss is computed before its only update, so
  it is finite, and epoch 2 diverges: exit 3, one line, epoch 1's checkpoint named and kept.
  Two steps per epoch diverge in epoch 1: no checkpoint is named, and the folder takes a new
  start."""
  common = ["--data-dir", mnist_dir, "--model", "net", "--lr", "1e6", "--batch-size", 128,
            "--test-examples", 500, "--epochs", 3, "--no-progress"]
  later = tmp_path / "later"
  result = run([*common, "--train-examples", 128, "--workdir", later])
  assert result.returncode == 3, result.stderr
  [line] = result.stderr.strip().splitlines()
  assert "in epoch 2" in line and f"epoch 1) is kept in {later}/checkpoints" in line, line
  assert sorted(os.listdir(later / "checkpoints")) == ["1"] and len(metrics(later)) == 1
  assert restore_run(later, Config(model="net", learning_rate=1e6, batch_size=128,
                                   num_train_examples=128))[1]["history"][0]["epoch"] == 1

  first = tmp_path / "first"
  for attempt in range(2):  # the second start in the same folder is not refused
    result = run([*common, "--train-examples", 256, "--workdir", first])
    assert result.returncode == 3, (attempt, result.stderr)
    [line] = result.stderr.strip().splitlines()
    assert "in epoch 1" in line and "no checkpoint was made" in line and "kept" not in line, line


def test_two_runs_started_into_one_new_folder_at_once_one_is_refused(tmp_path, mnist_dir):
  """Both pass the "already holds a run" check of an empty folder; the run's lock lets one
  train and refuses the other in one line, whatever their timing."""
  flags = ["--data-dir", mnist_dir, "--epochs", 1, *SMALL, "--workdir", tmp_path / "run"]
  procs = [subprocess.Popen([*TRAIN, *map(str, flags)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True) for _ in range(2)]
  results = sorted((p.wait(timeout=600), p.stderr.read()) for p in procs)
  assert [rc for rc, _ in results] == [0, 2], results
  [line] = results[1][1].strip().splitlines()
  assert "another train.py is running in it" in line or "already holds a run" in line, line
  assert [r["epoch"] for r in metrics(tmp_path / "run")] == [1]
