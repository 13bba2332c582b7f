"""The real loop on real MNIST, small settings: a subset of the training images."""

import json
import os
import pathlib
import shutil

import jax
import numpy as np
import pytest

from conftest import ROOT, assert_trees_equal
from mnist_jax import (Config, Execution, TinyNet, checkpointing, create_train_state, epoch,
                       input_pipeline, run, steps, train_and_evaluate, trainer)
from tolerance import assert_as_accurate, to_float64


@pytest.fixture(scope="module")
def small_config():
  return Config(batch_size=256, learning_rate=0.01, num_epochs=2, num_train_examples=1000,
                num_test_examples=1000)


@pytest.fixture(scope="module")
def quiet(mnist_dir):
  """How the tests' runs execute: the real files, no progress bar."""
  return Execution(data_dir=mnist_dir, show_progress=False)


# Runs that several tests read, trained once: a test that continues or changes a run gets
# its own copy of the folder.
@pytest.fixture(scope="module")
def straight_run(tmp_path_factory, small_config, quiet):
  """(final state, folder) of the small run's 2 epochs, uninterrupted."""
  workdir = tmp_path_factory.mktemp("straight") / "run"
  return train_and_evaluate(small_config, str(workdir), quiet), workdir


@pytest.fixture(scope="module")
def first_epoch_run(tmp_path_factory, small_config, quiet):
  """The folder of the small run stopped after its first epoch."""
  workdir = tmp_path_factory.mktemp("first_epoch") / "run"
  train_and_evaluate(small_config.replace(num_epochs=1), str(workdir), quiet)
  return workdir


def _copy(run_folder, tmp_path):
  return str(shutil.copytree(run_folder, tmp_path / "run"))


def _history(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [{k: v for k, v in json.loads(line).items() if not k.endswith(("seconds", "second"))}
            for line in f]


def _assert_states_equal(a, b):
  assert_trees_equal((a.params, a.batch_stats, a.opt_state, a.step),
                     (b.params, b.batch_stats, b.opt_state, b.step))


def test_train_and_evaluate_returns_the_trained_state(straight_run, small_config, quiet):
  state, workdir = straight_run
  assert int(state.step) == 2 * 4  # ceil(1000 / 256) = 4 steps per epoch, last one short
  history = _history(workdir)
  assert [r["epoch"] for r in history] == [1, 2]
  assert history[1]["train_loss"] < history[0]["train_loss"]
  assert history[1]["test_accuracy"] > 0.2  # 8 steps on 1000 images, from 10% chance
  assert history[0]["learning_rate"] == pytest.approx(0.01)
  assert sorted(os.listdir(workdir / "checkpoints")) == ["1", "2"]
  saved = json.load(open(workdir / "config.json"))
  assert Config.from_dict(saved) == small_config  # the recipe, and beside it the execution:
  assert Execution.from_dict(saved["execution"]) == quiet


def test_resumed_run_equals_an_uninterrupted_one_bitwise(tmp_path, small_config, quiet,
                                                         straight_run, first_epoch_run):
  straight, straight_dir = straight_run
  workdir = _copy(first_epoch_run, tmp_path)
  resumed = train_and_evaluate(small_config, workdir, quiet, resume=True)
  _assert_states_equal(straight, resumed)
  assert _history(straight_dir) == _history(workdir)


def test_resume_refuses_another_recipe_and_takes_another_execution(tmp_path, small_config,
                                                                    quiet, first_epoch_run):
  workdir = _copy(first_epoch_run, tmp_path)
  with pytest.raises(trainer.RunError, match="learning_rate=0.01 \\(now 0.02\\)"):
    train_and_evaluate(small_config.replace(learning_rate=0.02), workdir, quiet, resume=True)
  # The recipe alone: another evaluation batch and checkpoint count continue it (another
  # formulation too: tests/train_cli_test.py).
  other = quiet.replace(eval_batch_size=500, keep_checkpoints=1)
  train_and_evaluate(small_config, workdir, other, resume=True)
  assert _history(workdir)[0]["epoch"] == 1 and len(_history(workdir)) == 2


def test_resume_with_fewer_epochs_than_done_is_refused_and_changes_nothing(
    tmp_path, small_config, quiet, straight_run):
  workdir = pathlib.Path(_copy(straight_run[1], tmp_path))
  before = {f: open(workdir / f, "rb").read() for f in ("metrics.jsonl", "config.json")}
  with pytest.raises(trainer.RunError, match="--epochs 1: the run has done 2 epochs already"):
    train_and_evaluate(small_config.replace(num_epochs=1), str(workdir), quiet, resume=True)
  assert before == {f: open(workdir / f, "rb").read() for f in before}


def test_config_files_from_before_the_split_load_and_resume(tmp_path, mnist, quiet):
  """results/ and results/sweep-lr/ hold config.json files written when the recipe and the
  execution were one flat record: each is a recipe its own checkpoint's matches, which a
  longer run may continue; results/' checkpoint restores into a run built from it."""
  for folder in ("results", "results/sweep-lr"):
    saved = json.load(open(ROOT / folder / "config.json"))
    assert "execution" not in saved and "seed_map" in saved  # the old, flat form
    config = Config.from_dict(saved)
    assert config.num_runs > 1 and config.num_epochs == 5
    assert config.replace(num_epochs=6).resume_problem(config, 5) is None
  checkpointer = checkpointing.Checkpointer(str(ROOT / "results" / "checkpoints"))
  try:
    progress = checkpointer.restore_progress()
    assert Config.from_dict(progress["config"]) == Config.from_dict(saved := json.load(
        open(ROOT / "results" / "config.json")))
    restored = run.build_run(Config.from_dict(saved).replace(num_epochs=6), quiet, mnist,
                             checkpointer=checkpointer)
  finally:
    checkpointer.close()
  assert int(restored.state.step[0]) == 5 * 235 and len(restored.history) == 5


def test_an_earlier_run_is_never_overwritten(tmp_path, small_config, quiet, first_epoch_run):
  workdir = pathlib.Path(_copy(first_epoch_run, tmp_path))
  before = {f: open(workdir / f, "rb").read() for f in ("metrics.jsonl", "config.json")}
  with pytest.raises(trainer.RunError, match="already holds a run"):
    train_and_evaluate(small_config, str(workdir), quiet)
  assert before == {f: open(workdir / f, "rb").read() for f in before}


def test_resume_without_checkpoints_is_refused(tmp_path, small_config, quiet):
  with pytest.raises(checkpointing.CheckpointError, match="no checkpoints to resume"):
    train_and_evaluate(small_config, str(tmp_path), quiet, resume=True)


def test_evaluation_with_a_padded_last_batch_counts_each_image_once(mnist):
  """3,000 does not divide 5,000: the last eval batch is padded and masked."""
  state = create_train_state(jax.random.key(0), TinyNet(), Config(), steps_per_epoch=1)
  test = input_pipeline.to_device(input_pipeline.subset(mnist["test"], 5000))
  evaluate = jax.jit(epoch.evaluate, static_argnames="batch_size")
  results = {}
  for batch_size in (1000, 3000):
    order = input_pipeline.sequential_order(5_000, batch_size)
    results[batch_size] = evaluate(state, test, order, batch_size=batch_size)
    assert float(results[batch_size]["count"]) == 5_000
  assert float(results[3000]["correct"]) == float(results[1000]["correct"])
  # The two loss sums differ by float32 rounding alone (kernels per batch size, the order
  # of 5,000 additions); a padded image counted even once would add its whole loss.
  with jax.enable_x64(True):  # all 5,000 at once, summed in float64
    exact = jax.jit(steps.eval_step)(to_float64(state), {"image": test.images,
                                                         "label": test.labels})
  assert_as_accurate(results[3000]["loss_sum"], results[1000]["loss_sum"], exact["loss_sum"])


def test_divergence_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, small_config,
                                                                      quiet):
  """Net at lr 1e6, one step per epoch: epoch 1's loss comes before its only update, epoch 2
  diverges. Epoch 1's checkpoint is kept and named; no curves are drawn."""
  config = small_config.replace(model="net", learning_rate=1e6, batch_size=100,
                                num_train_examples=100, num_epochs=3)
  with pytest.raises(trainer.TrainingDiverged, match=r"in epoch 2: .*\(epoch 1\) is kept"):
    train_and_evaluate(config, str(tmp_path), quiet)
  assert not os.path.exists(tmp_path / "training_curves.png")
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["1"]


@pytest.mark.slow
def test_two_seeds_resume_bitwise(tmp_path, small_config, quiet):
  config = small_config.replace(num_seeds=2, seed=3)
  straight = train_and_evaluate(config, str(tmp_path / "a"), quiet)
  train_and_evaluate(config.replace(num_epochs=1), str(tmp_path / "b"), quiet)
  resumed = train_and_evaluate(config, str(tmp_path / "b"), quiet, resume=True)
  assert straight.params["fc"]["kernel"].shape == (2, 64, 10)  # the seed axis
  _assert_states_equal(straight, resumed)
  history = _history(tmp_path / "a")
  assert history == _history(tmp_path / "b")
  assert history[0]["seeds"] == [3, 4]
  for key in ("train_loss", "test_accuracy"):
    values = history[1]["per_seed"][key]
    assert values[0] != values[1]  # two runs, not one twice
    assert history[1][key] == pytest.approx(np.mean(values), rel=1e-12)
    assert history[1][key + "_std"] == pytest.approx(np.std(values, ddof=1), rel=1e-12)
    assert (history[1][key + "_min"], history[1][key + "_max"]) == (min(values), max(values))
  with pytest.raises(trainer.RunError, match="num_seeds=2 \\(now 3\\)"):
    train_and_evaluate(config.replace(num_seeds=3, num_epochs=3), str(tmp_path / "b"), quiet,
                       resume=True)


def test_precise_bn_changes_no_training_and_is_kept_for_evaluation(tmp_path, small_config,
                                                                    quiet, straight_run, mnist):
  plain, plain_dir = straight_run
  precise = train_and_evaluate(small_config.replace(precise_bn=True), str(tmp_path / "precise"),
                               quiet)
  _assert_states_equal(plain, precise)  # running statistics included
  history = _history(tmp_path / "precise")
  for with_precise, without in zip(history, _history(plain_dir)):
    assert {k: v for k, v in with_precise.items() if "precise" not in k} == without
  # The checkpoint keeps them: evaluating with them gives the accuracy the run reported.
  checkpointer = checkpointing.Checkpointer(str(tmp_path / "precise" / "checkpoints"))
  try:
    stats = checkpointer.restore_precise_batch_stats(precise.batch_stats)
  finally:
    checkpointer.close()
  # (on the run's first 1,000 test images: all 10,000 give another accuracy)
  test = mnist["test"]
  evaluate = jax.jit(epoch.evaluate, static_argnames="batch_size")
  accuracy = {n: float(evaluate(precise.replace(batch_stats=stats),
                                input_pipeline.to_device(input_pipeline.subset(test, n)),
                                input_pipeline.sequential_order(n, 1000),
                                batch_size=1000)["correct"]) / n for n in (1000, 10_000)}
  assert accuracy[1000] == history[-1]["test_accuracy_precise_bn"] != accuracy[10_000]
  assert history[-1]["test_accuracy_precise_bn"] != history[-1]["test_accuracy"]
  with pytest.raises(checkpointing.CheckpointError, match="without --precise-bn"):
    checkpointer = checkpointing.Checkpointer(str(plain_dir / "checkpoints"))
    try:
      checkpointer.restore_precise_batch_stats(plain.batch_stats)
    finally:
      checkpointer.close()
