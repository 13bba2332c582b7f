"""train.py as a user runs it: a subprocess, real MNIST passed with --data-dir."""

import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, assert_events_are_metrics, assert_trees_equal, require, restore_run
from mnist_jax import Config, data
from mnist_jax import phases as phases_lib

TRAIN = [sys.executable, str(ROOT / "train.py")]


def run(args, cwd=None, timeout=900):
  return subprocess.run(TRAIN + [str(a) for a in args], cwd=cwd, capture_output=True,
                        text=True, timeout=timeout)


OUR_LINES = ("run folder: ", "epoch ", "time: ", "done: ")


def assert_only_our_lines(result, more=()):
  """A finished run's console: nothing on stderr, and on stdout only train.py's own lines
  (no third-party log lines, warnings or progress bars)."""
  assert result.stderr == "", result.stderr
  for line in filter(None, result.stdout.splitlines()):  # (blank lines set tables apart)
    assert line.startswith(OUR_LINES + tuple(more)), line


def metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [{k: v for k, v in json.loads(line).items() if not k.endswith(("seconds", "second"))}
            for line in f]


@pytest.mark.slow
def test_two_epochs_of_the_headline_recipe_on_real_mnist(tmp_path, mnist_dir):
  """The original README's recipe (batch 256, lr 0.01), two epochs: >= 94% after epoch 2."""
  workdir = tmp_path / "run"
  result = run(["--epochs", 2, "--batch-size", 256, "--lr", 0.01, "--seed", 0,
                "--data-dir", mnist_dir, "--workdir", workdir, "--no-progress"])
  assert result.returncode == 0, result.stderr
  history = metrics(workdir)
  assert [r["epoch"] for r in history] == [1, 2]
  assert history[1]["test_accuracy"] >= 0.94, history
  with Image.open(workdir / "training_curves.png") as png:
    assert png.size[0] > 500 and png.size[1] > 300
  summary = (workdir / "model_summary.txt").read_text()
  assert "Trainable parameters: 22,334" in summary
  for layer in ("conv1", "bn1", "conv2", "bn2", "conv3", "bn3", "fc"):
    assert layer in summary
  config = json.loads((workdir / "config.json").read_text())
  assert config["batch_size"] == 256 and config["learning_rate"] == 0.01
  assert sorted(os.listdir(workdir / "checkpoints")) == ["1", "2"]
  assert "epoch   2" in result.stdout
  assert_only_our_lines(result)
  assert list(assert_events_are_metrics(workdir)) == ["."]  # TensorBoard's curves: one run


@pytest.mark.slow
def test_two_seeds_end_to_end(tmp_path, mnist_dir):
  """`--seeds 2 --precise-bn` on a subset, 8 steps an epoch trained in chunks of 3, 3 and 2
  steps: per-seed files, mean ± std on the console."""
  workdir = tmp_path / "run"
  result = run(["--seeds", 2, "--seed", 7, "--precise-bn", "--epochs", 2, "--batch-size", 256,
                "--steps-per-chunk", 3,
                "--lr", 0.01, "--train-examples", 2048, "--test-examples", 1000,
                "--data-dir", mnist_dir,
                "--workdir", workdir, "--no-progress"])
  assert result.returncode == 0, result.stderr
  history = metrics(workdir)
  assert history[0]["seeds"] == [7, 8]
  assert json.loads((workdir / "config.json").read_text())["execution"]["steps_per_chunk"] == 3
  for record in history:
    for key in ("test_accuracy", "test_accuracy_precise_bn"):
      values = record["per_seed"][key]
      assert len(values) == 2 and record[key] == pytest.approx(sum(values) / 2)
  epoch_lines = [l for l in result.stdout.splitlines() if l.startswith("epoch")]
  assert len(epoch_lines) == 2 and all(l.count("±") == 3 for l in epoch_lines), result.stdout
  assert_only_our_lines(result)
  with Image.open(workdir / "training_curves.png") as png:
    assert png.size[0] > 500
  table = subprocess.run([sys.executable, "-m", "scripts.accuracy_table", workdir], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
  assert "n=2" in table and "precise" in table
  assert sorted(assert_events_are_metrics(workdir)) == [".", "seed_7", "seed_8"]  # mean, seeds


@pytest.mark.slow
def test_the_speedrun_preset_is_its_docstring_and_reports_where_the_time_went(tmp_path,
                                                                               mnist_dir):
  """`--config speedrun` is the recipe its docstring states; trained on 512 images (2 steps an
  epoch) with 2 of its 8 seeds (compiling 8 takes a minute on 2 cores), the rate per epoch
  is the schedule's; the process's phases on the last epoch's line of metrics.jsonl and as
  the console's summary line, adding up; `--profile`'s trace of the steps; `--verbose`'s
  library log lines."""
  from mnist_jax.configs import speedrun  # pylint: disable=import-outside-toplevel
  doc = " ".join(speedrun.__doc__.split())
  for words in ("22,334 parameters", "Adam", "from 0.004 to 0.04 over the first quarter of the "
                "steps, then linear to zero", "batch 256", "the original's augmentation",
                "3 epochs, 8 seeds", "python train.py --config speedrun"):
    assert words in doc, words
  workdir = tmp_path / "run"
  recipe = {"model": "tiny", "batch_size": 256, "learning_rate": 0.04, "schedule": "onecycle",
            "warmup_fraction": 0.25, "num_epochs": 3, "num_seeds": 8, "augment": True,
            "bn_momentum": 0.1, "precise_bn": False, "sweep": ()}
  assert {k: getattr(speedrun.get_config(), k) for k in recipe} == recipe
  result = run(["--config", "speedrun", "--seeds", 2, "--train-examples", 512,
                "--test-examples", 500,
                "--data-dir", mnist_dir, "--workdir", workdir, "--no-progress",
                "--profile", tmp_path / "profile", "--verbose"])
  assert result.returncode == 0, result.stderr
  assert "INFO:absl:" in result.stderr  # --verbose: orbax's own lines, which runs leave out
  # --profile: a trace of the training programs after the first, for Perfetto and TensorBoard.
  [perfetto] = (tmp_path / "profile").glob("plugins/profile/*/perfetto_trace.json.gz")
  assert list(perfetto.parent.glob("*.xplane.pb"))
  with gzip.open(perfetto, "rt") as f:
    events = json.load(f)["traceEvents"]
  assert any("train" in event.get("name", "") for event in events)
  config = json.loads((workdir / "config.json").read_text())
  assert {k: config[k] for k in recipe} == {**recipe, "num_seeds": 2, "sweep": []}  # (JSON)
  assert "Trainable parameters: 22,334" in (workdir / "model_summary.txt").read_text()
  with open(workdir / "metrics.jsonl") as f:
    history = [json.loads(line) for line in f]
  # 6 steps, 2 of warm-up: each epoch's first step at counts 0, 2 and 4.
  np.testing.assert_allclose([r["learning_rate"] for r in history], [0.004, 0.04, 0.02],
                             rtol=1e-6)
  assert len(history[-1]["per_seed"]["test_accuracy"]) == 2
  phases = history[-1]["phases_seconds"]
  assert "phases_seconds" not in history[0]
  for name in ("start", "data", "imports", "backend", "initialisation", "compilation",
               "training", "evaluation", "checkpoints", "metrics", "plots"):
    assert phases[name] >= 0, name
  assert phases["total"] == pytest.approx(sum(v for k, v in phases.items() if k != "total"),
                                          abs=0.001 * len(phases))  # each rounded to 1 ms
  lines = result.stdout.strip().splitlines()
  assert lines[-2] == phases_lib.summary_line(phases) and lines[-1] == f"done: {workdir}"


def test_a_preset_file_of_ones_own_trains_from_another_folder(tmp_path, mnist_dir):
  """`--config mine.py` (a file outside the repository, importing mnist_jax as a user's
  would), run as `python -m mnist_jax` from that folder in a plain process: the recipe is
  the file's, flags override it, and the run folder says so."""
  (tmp_path / "mine.py").write_text(
      "from mnist_jax import Config\n\n\ndef get_config():\n"
      "  return Config(batch_size=128, learning_rate=0.02, num_epochs=1, "
      "num_train_examples=512, num_test_examples=1000)\n")
  env = dict(os.environ, PYTHONPATH=str(ROOT))  # what `pip install .` gives a user
  result = subprocess.run(
      [sys.executable, "-m", "mnist_jax", "--config", "mine.py", "--seed", "3", "--data-dir",
       mnist_dir, "--workdir", "run", "--no-progress"], cwd=tmp_path, env=env,
      capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stderr
  saved = json.loads((tmp_path / "run" / "config.json").read_text())
  assert Config.from_dict(saved) == Config(batch_size=128, learning_rate=0.02, num_epochs=1,
                                           num_train_examples=512, num_test_examples=1000, seed=3)
  assert [r["epoch"] for r in metrics(tmp_path / "run")] == [1]


def test_a_run_of_one_formulation_resumes_in_the_other(tmp_path, mnist_dir):
  """`--formulation` reaches the model: a run trained with the standard formulation goes on
  with the CPU one (the same variables), each recorded in config.json's execution."""
  workdir = tmp_path / "run"
  first = run(_small_args(workdir, mnist_dir, "--formulation", "standard"))
  assert first.returncode == 0, first.stderr
  assert json.loads((workdir / "config.json").read_text())["execution"]["formulation"] == "standard"
  second = run(_small_args(workdir, mnist_dir, "--formulation", "cpu", "--resume", "--epochs", 2))
  assert second.returncode == 0, second.stderr
  assert json.loads((workdir / "config.json").read_text())["execution"]["formulation"] == "cpu"
  history = metrics(workdir)
  assert [r["epoch"] for r in history] == [1, 2] and history[1]["train_loss"] < history[0]["train_loss"]


# ---- bad inputs: exit 2, one line on stderr naming the problem, nothing written ----

TRAIN_IMAGES = "train-images-idx3-ubyte.gz"
TRAIN_LABELS = "train-labels-idx1-ubyte.gz"


def _write_gz(path, payload):
  with gzip.open(path, "wb") as f:
    f.write(payload)


def _header(magic, *dims):
  return np.array([magic, *dims], ">i4").tobytes()


def _small_args(workdir, mnist_dir, *extra):
  """A one-epoch run on a subset; workdir None: train.py's own new folder."""
  return ["--data-dir", mnist_dir, "--epochs", 1, "--train-examples", 512, "--batch-size", 128,
          "--test-examples", 1000, *(["--workdir", workdir] if workdir else []), "--no-progress",
          *extra]


def _spoiled_data(spoil):
  """A copy of MNIST with one thing wrong."""
  def setup(tmp_path, mnist_dir, _):
    folder = str(tmp_path / "data")
    os.makedirs(folder)
    for name in os.listdir(mnist_dir):
      if name.endswith(".gz"):
        shutil.copy(os.path.join(mnist_dir, name), folder)
    spoil(folder)
    return ["--data-dir", folder, "--epochs", 1]
  return setup


def _preset_file(text):
  """A preset file with something wrong in it."""
  def setup(tmp_path, mnist_dir, _):
    (tmp_path / "preset.py").write_text(text)
    return ["--config", tmp_path / "preset.py", "--data-dir", tmp_path / "absent"]
  return setup


def _flags(*flags):
  # The data dir would fail if it were read: flags must be checked first.
  return lambda tmp_path, mnist_dir, _: [*flags, "--data-dir", tmp_path / "absent"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, mnist_dir):
  """A finished one-epoch run, trained once for the cases below that need one."""
  workdir = tmp_path_factory.mktemp("finished") / "run"
  result = run(_small_args(workdir, mnist_dir))
  assert result.returncode == 0, result.stderr
  return workdir


def _after_a_run(*extra, spoil=lambda workdir: None):
  """A copy of `finished_run` in tmp_path/run, then a second command on it."""
  def setup(tmp_path, mnist_dir, finished_run):
    workdir = tmp_path / "run"
    shutil.copytree(finished_run(), workdir)
    spoil(workdir)
    return _small_args(workdir, mnist_dir, *extra)
  return setup


def _unreadable(folder):
  # Root reads any file whatever its mode; /proc/self/mem is unreadable at offset 0 for all.
  os.remove(os.path.join(folder, TRAIN_LABELS))
  os.symlink("/proc/self/mem", os.path.join(folder, TRAIN_LABELS))


def _file_as_data_dir(tmp_path, mnist_dir, _):
  (tmp_path / "file").write_text("x")
  return ["--data-dir", tmp_path / "file"]


# case -> (what to set up, returning the command's flags; words its one error line must hold)
BAD_INPUTS = {
    "data dir missing": (_spoiled_data(shutil.rmtree), "no such directory"),
    "data dir empty": (_spoiled_data(
        lambda d: [os.remove(os.path.join(d, f)) for f in os.listdir(d)]), "file not found"),
    "data dir is a file": (_file_as_data_dir, "is a file, not a directory"),
    "file missing": (_spoiled_data(lambda d: os.remove(os.path.join(d, TRAIN_LABELS))),
                     "file not found"),
    "truncated gz": (_spoiled_data(
        lambda d: open(os.path.join(d, TRAIN_IMAGES), "r+b").truncate(5000)),
                     "truncated or corrupt gzip"),
    "not gzip": (_spoiled_data(
        lambda d: open(os.path.join(d, TRAIN_IMAGES), "wb").write(b"plain text")),
                 "not a gzip file"),
    "wrong magic": (_spoiled_data(lambda d: _write_gz(
        os.path.join(d, TRAIN_LABELS), _header(2051, 3) + bytes(3))), "magic number 2051"),
    "wrong image size": (_spoiled_data(lambda d: _write_gz(
        os.path.join(d, TRAIN_IMAGES), _header(2051, 2, 32, 32) + bytes(2048))),
                         "32x32, expected 28x28"),
    "count vs length": (_spoiled_data(lambda d: _write_gz(
        os.path.join(d, TRAIN_IMAGES), _header(2051, 60000, 28, 28) + bytes(784))),
                        "header says 60000 items"),
    "image/label mismatch": (_spoiled_data(lambda d: _write_gz(
        os.path.join(d, TRAIN_LABELS), _header(2049, 3) + bytes(3))),
                             "3 labels for 60000 images"),
    "label > 9": (_spoiled_data(lambda d: _write_gz(
        os.path.join(d, TRAIN_LABELS), _header(2049, 60000) + bytes([11]) + bytes(59999))),
                  "label 11 at index 0"),
    "unreadable file": (_spoiled_data(_unreadable), "cannot read"),
    "batch 0": (_flags("--batch-size", 0), "--batch-size"),
    "batch negative": (_flags("--batch-size", -5), "--batch-size"),
    "batch larger than the train set": (
        lambda tmp_path, mnist_dir, _: ["--data-dir", mnist_dir, "--batch-size", 60001],
        "--batch-size 60001 is larger than the 60000 training examples"),
    "epochs 0": (_flags("--epochs", 0), "--epochs"),
    "test examples 0": (_flags("--test-examples", 0), "--test-examples: must be positive"),
    "lr 0": (_flags("--lr", 0), "--lr"),
    "lr negative": (_flags("--lr", -0.1), "--lr"),
    "lr nan": (_flags("--lr", "nan"), "--lr"),
    "lr inf": (_flags("--lr", "inf"), "--lr"),
    "gamma 0": (_flags("--gamma", 0), "--gamma"),
    "gamma > 1": (_flags("--gamma", 1.5), "--gamma"),
    "unknown model": (_flags("--model", "resnet"), "--model"),
    "seeds 0": (_flags("--seeds", 0), "--seeds"),
    "steps per chunk 0": (_flags("--steps-per-chunk", 0), "--steps-per-chunk"),
    "precise BatchNorm without BatchNorm": (_flags("--model", "net", "--precise-bn"),
                                            "--precise-bn: Net has no BatchNorm"),
    "step sizes disagree": (_flags("--step-size", 3, "--steps-per-decay", 4), "--step-size"),
    "unknown preset": (_flags("--config", "nope"), "--config: no preset 'nope'; choose one of"),
    "preset file missing": (_flags("--config", "absent.py"), "--config: absent.py: no such file"),
    "preset file without get_config": (
        _preset_file("CONFIG = 1\n"), "defines no get_config()"),
    "preset file of another type": (
        _preset_file("def get_config():\n  return {'batch_size': 1}\n"),
        "get_config() returned dict, not a mnist_jax.Config"),
    "preset file that fails": (
        _preset_file("def get_config():\n  return 1 / 0\n"), "ZeroDivisionError"),
    "preset file with a bad value": (
        _preset_file("from mnist_jax import Config\ndef get_config():\n"
                     "  return Config(batch_size=0)\n"), "--batch-size: must be a positive"),
    "unknown formulation": (_flags("--formulation", "gpu"), "--formulation: invalid choice"),
    "resume without workdir": (_flags("--resume"), "--resume"),
    "resume with no checkpoint": (
        lambda tmp_path, mnist_dir, _: _small_args(tmp_path / "empty", mnist_dir, "--resume"),
        "no checkpoints to resume from"),
    "workdir holds a run": (_after_a_run("--lr", 0.5), "already holds a run"),
    "resume with another seed count": (_after_a_run("--resume", "--epochs", 2, "--seeds", 2),
                                       "num_seeds=1 (now 2)"),
    "resume with a sweep": (_after_a_run("--resume", "--epochs", 2, "--sweep", "lr=0.01,0.02"),
                            "sweep='none' (now '--sweep learning_rate=0.01,0.02')"),
    "sweep of no field": (_flags("--sweep", "width=1,2"), "--sweep width: is no config field"),
    "sweep of a shape": (_flags("--sweep", "batch_size=128,256"),
                         "--sweep batch_size: changes the program's shapes"),
    "sweep of the model": (_flags("--sweep", "model=1,2"), "--sweep model: changes"),
    "sweep of seeds": (_flags("--sweep", "seed=1,2"), "use --seeds N"),
    "sweep value out of range": (_flags("--sweep", "bn-momentum=0.1,1.5"),
                                 "--sweep bn_momentum=1.5: must lie in [0, 1]"),
    "sweep step size not whole": (_flags("--sweep", "step_size=2,2.5"),
                                  "--sweep step_size=2.5: must be a whole number"),
    "sweep step size infinite": (_flags("--sweep", "step_size=inf"),
                                 "--sweep step_size=inf: must be a whole number"),
    "sweep of no values": (_flags("--sweep", "lr="), "--sweep learning_rate: no values"),
    "sweep value not a number": (_flags("--sweep", "lr=0.01,fast"),
                                 "--sweep learning_rate=fast: not a number"),
    "sweep without values": (_flags("--sweep", "gamma"), "expected NAME=V1,V2"),
    "sweep field twice": (_flags("--sweep", "lr=0.1", "--sweep", "lr=0.2"), "given twice"),
    "run groups 0": (_flags("--run-groups", 0), "--run-groups: must be a positive integer"),
    "a process count without a coordinator": (
        _flags("--num-processes", 2, "--process-id", 0), "a multi-host run needs all of"),
    "a process id out of range": (
        _flags("--coordinator-address", "127.0.0.1:23456", "--num-processes", 2,
               "--process-id", 5), "--process-id 5: must lie in 0..1"),
    "a coordinator without a port": (
        _flags("--coordinator-address", "localhost", "--num-processes", 2, "--process-id", 0),
        "expected HOST:PORT"),
    "distributed and explicit": (_flags("--distributed", "--num-processes", 2),
                                 "--distributed detects the cluster by itself"),
    "run groups that split no runs": (
        lambda tmp_path, mnist_dir, _: _small_args(tmp_path / "run", mnist_dir, "--seeds", 3,
                                                   "--run-groups", 2),
        "--run-groups 2: must divide the 3 runs (settings x seeds) and the"),
}


def _files(folder) -> dict:
  """Every file's bytes and every folder (None) under `folder`."""
  found = {}
  for root, dirs, names in os.walk(folder):
    found.update((os.path.join(root, d), None) for d in dirs)
    for name in names:
      path = os.path.join(root, name)
      if not os.path.islink(path):
        found[path] = open(path, "rb").read()
  return found


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, mnist_dir, case, request):
  setup, words = BAD_INPUTS[case]
  args = setup(tmp_path, mnist_dir, lambda: request.getfixturevalue("finished_run"))
  before = _files(tmp_path)
  result = run(args, cwd=tmp_path)
  assert result.returncode == 2, (result.returncode, result.stderr)
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
  assert words in lines[0], lines[0]
  assert _files(tmp_path) == before  # no earlier file changed, no new file or folder
  assert "run folder" not in result.stdout  # no run was started


@pytest.mark.slow
def test_a_sweep_end_to_end_with_resume_and_a_chosen_setting(tmp_path, mnist_dir):
  """Two learning rates x 2 seeds as one run axis, --precise-bn: per setting its seeds'
  statistics in metrics.jsonl, sweep.csv, the plots, the table best first; resumed only
  with the same grid (the first epoch on a runs x data mesh of train.py's 2 CPU devices, the
  second on its 1-D mesh); predict.py answers with the best setting's seeds, or the one asked."""
  workdir = tmp_path / "run"
  common = ["--sweep", "lr=0.001,0.01", "--seeds", 2, "--seed", 3, "--precise-bn",
            "--batch-size", 256, "--train-examples", 1024, "--test-examples", 1000,
            "--data-dir", mnist_dir,
            "--workdir", workdir, "--no-progress"]
  first = run(common + ["--epochs", 1, "--run-groups", 2])
  assert first.returncode == 0, first.stderr
  before = _files(tmp_path)
  other_grid = run([a if a != "lr=0.001,0.01" else "lr=0.001,0.02" for a in common]
                   + ["--epochs", 2, "--resume"])
  assert other_grid.returncode == 2 and "Traceback" not in other_grid.stderr
  assert other_grid.stderr.strip().splitlines() == [
      "train.py: error: cannot resume: the checkpoint was made with sweep='--sweep "
      "learning_rate=0.001,0.01' (now '--sweep learning_rate=0.001,0.02'); resume with the "
      "same settings or start a new --workdir"]
  assert _files(tmp_path) == before
  result = run(common + ["--epochs", 2, "--resume"])
  assert result.returncode == 0, result.stderr
  assert_only_our_lines(result, more=("Sweep after epoch", "|"))  # and the sweep's table

  history = metrics(workdir)
  assert [r["epoch"] for r in history] == [1, 2]
  for record in history:
    assert record["seeds"] == [3, 4]
    assert [e["setting"] for e in record["settings"]] == [{"learning_rate": 0.001},
                                                          {"learning_rate": 0.01}]
    for entry in record["settings"]:
      for key in ("train_loss", "test_accuracy", "test_accuracy_precise_bn"):
        values = entry["per_seed"][key]
        assert len(values) == 2 and entry[key] == pytest.approx(np.mean(values), rel=1e-12)
  slow, fast = history[-1]["settings"]
  assert slow["train_loss"] != fast["train_loss"]  # two settings, not one twice
  # TensorBoard: a run per setting and per setting's seed, each epoch once though resumed; the
  # settings' swept values as HParams, their test metrics as its metrics.
  runs = assert_events_are_metrics(workdir)
  assert sorted(runs) == [".", "learning_rate=0.001", "learning_rate=0.001/seed_3",
                          "learning_rate=0.001/seed_4", "learning_rate=0.01",
                          "learning_rate=0.01/seed_3", "learning_rate=0.01/seed_4"]
  assert _hparams(workdir / "tensorboard" / "learning_rate=0.01") == (
      {"learning_rate": 0.01}, ["test/accuracy", "test/accuracy_precise_bn", "test/loss",
                                "test/loss_precise_bn"])
  rows = (workdir / "sweep.csv").read_text().splitlines()
  assert rows[0].startswith("epoch,setting,learning_rate,learning_rate_now,train_loss,")
  assert [r.split(",")[:3] for r in rows[1:]] == [["1", "0", "0.001"], ["1", "1", "0.01"],
                                                  ["2", "0", "0.001"], ["2", "1", "0.01"]]
  for name in ("sweep.png", "training_curves.png"):
    with Image.open(workdir / name) as png:
      assert png.size[0] > 500
  best = int(fast["test_accuracy_precise_bn"] > slow["test_accuracy_precise_bn"])
  table = result.stdout[result.stdout.index("Sweep after epoch 2"):].splitlines()
  assert [line.split("|")[1].strip() for line in table[4:6]] == [str(best), str(1 - best)]
  assert f"best of 2: learning_rate={('0.001', '0.01')[best]}" in result.stdout

  digit = tmp_path / "digit.png"
  Image.fromarray(np.asarray(data.load_mnist(mnist_dir)["test"].images[0, ..., 0])).save(digit)
  predict = lambda *flags: subprocess.run(
      [sys.executable, str(ROOT / "predict.py"), workdir, digit, "--json", *flags],
      capture_output=True, text=True, timeout=300)
  chosen, asked, missing = predict(), predict("--setting", str(1 - best)), predict("--setting", "2")
  assert chosen.returncode == 0 and asked.returncode == 0, chosen.stderr + asked.stderr
  assert f"setting {best} of 2 (learning_rate={('0.001', '0.01')[best]}), the best by final " \
         "test accuracy" in chosen.stderr
  assert f"setting {1 - best} of 2" in asked.stderr
  assert json.loads(chosen.stdout) != json.loads(asked.stdout)  # other weights answered
  assert missing.returncode == 2 and missing.stderr.strip().splitlines() == [
      "predict.py: error: --setting 2: the sweep has 2 settings; use 0 to 1 (sweep.csv lists "
      "them)"]
  exported = subprocess.run([sys.executable, str(ROOT / "export.py"), workdir, "--out",
                             tmp_path / "model.jaxexport", "--setting", str(1 - best)],
                            capture_output=True, text=True, timeout=300)
  assert exported.returncode == 0, exported.stderr
  assert f"setting {1 - best} of 2 (learning_rate={('0.001', '0.01')[1 - best]}), as asked, " \
         "seed index 0" in exported.stdout


def _hparams(folder) -> tuple[dict, list[str]]:
  """A TensorBoard run's HParams session: its values, and the experiment's metric tags."""
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=import-outside-toplevel
  from tensorboard.plugins.hparams import plugin_data_pb2  # pylint: disable=import-outside-toplevel
  events = event_accumulator.EventAccumulator(str(folder))
  events.Reload()
  found = {}
  for content in events.PluginTagToContent("hparams").values():
    data = plugin_data_pb2.HParamsPluginData.FromString(content)
    found[data.WhichOneof("data")] = data
  values = {k: v.number_value for k, v in found["session_start_info"].session_start_info
            .hparams.items()}
  metrics = sorted(m.name.tag for m in found["experiment"].experiment.metric_infos)
  return values, metrics


def test_offline_without_data_fails_fast(tmp_path):
  require("tensorflow_datasets")
  if data.reachable("https://storage.googleapis.com/"):
    pytest.skip("this machine is online: TFDS would download MNIST")
  env = dict(os.environ, TFDS_DATA_DIR=str(tmp_path / "tfds"))  # an empty TFDS cache
  start = time.perf_counter()
  result = subprocess.run(TRAIN + ["--epochs", "1"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
  assert time.perf_counter() - start < 60  # the 30 s budget, plus interpreter and TF start-up
  assert result.returncode == 2
  assert "--data-dir" in result.stderr.strip().splitlines()[-1]


def test_two_runs_started_together_get_different_folders(tmp_path, mnist_dir):
  args = TRAIN + [str(a) for a in _small_args(None, mnist_dir)]  # the finished run's programs
  procs = [subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True) for _ in range(2)]
  outs = [p.communicate(timeout=600) for p in procs]
  assert all(p.returncode == 0 for p in procs), outs
  folders = os.listdir(tmp_path / "runs")
  assert len(folders) == 2
  for folder in folders:
    assert len(metrics(tmp_path / "runs" / folder)) == 1


# ---- kill and resume ----

@pytest.mark.slow
def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path, mnist_dir):
  flags = ["--data-dir", mnist_dir, "--epochs", "3", "--train-examples", "4096",
           "--test-examples", "1000",
           "--batch-size", "256", "--lr", "0.01", "--no-progress"]
  straight, killed = tmp_path / "straight", tmp_path / "killed"
  proc = subprocess.Popen(TRAIN + flags + ["--workdir", str(killed)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 600
  while not (killed / "checkpoints" / "1").is_dir() and time.time() < deadline:
    assert proc.poll() is None, "the run ended before its first checkpoint"
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)  # epoch 2 is under way
  proc.wait()
  assert not (killed / "checkpoints" / "3").exists()

  # The uninterrupted run, in a process of its own beside the resumed one; started only now, it
  # loads the programs the killed run compiled (the suite's shared compilation cache).
  uninterrupted = subprocess.Popen(TRAIN + flags + ["--workdir", str(straight)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  resumed = run(flags + ["--workdir", killed, "--resume"])
  assert resumed.returncode == 0, resumed.stderr
  _, err = uninterrupted.communicate(timeout=600)
  assert uninterrupted.returncode == 0, err

  config = Config(batch_size=256, learning_rate=0.01, num_epochs=3)
  (a, _), (b, _) = (restore_run(w, config) for w in (straight, killed))
  assert_trees_equal((a.params, a.batch_stats, a.opt_state, a.step),
                     (b.params, b.batch_stats, b.opt_state, b.step))
  assert metrics(straight) == metrics(killed)
  assert len(metrics(killed)) == 3
  assert_events_are_metrics(killed)  # each epoch once, though killed after epoch 1's checkpoint
