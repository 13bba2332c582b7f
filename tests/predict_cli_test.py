"""predict.py as a user runs it, on the model committed in results/ (8 seeds, precise BN)."""

import json
import subprocess
import sys

from PIL import Image

from conftest import ROOT

PREDICT = [sys.executable, str(ROOT / "predict.py")]


def run(*args):
  return subprocess.run(PREDICT + [str(a) for a in args], capture_output=True, text=True,
                        timeout=600)


def test_digits_from_files_with_bad_files_among_them(tmp_path, mnist):
  images, labels = mnist["test"].images[:6, ..., 0], mnist["test"].labels[:6]
  files = []
  for i, (digit_HW, label) in enumerate(zip(images, labels)):
    path = tmp_path / f"digit{i}.{'png' if i % 2 else 'jpg'}"
    # Dark ink on white, ten times MNIST's size, in colour: as a scan or a photo would be.
    Image.fromarray(255 - digit_HW).resize((280, 280)).convert("RGB").save(path)
    files.append(path)
  (tmp_path / "notes.png").write_text("not an image")
  Image.new("L", (40, 40), 255).save(tmp_path / "blank.png")
  Image.new("1", (30000, 30000), 1).save(tmp_path / "bomb.png")  # 109 kB, 900 Mpx declared

  result = run(ROOT / "results", files[0], tmp_path / "notes.png", *files[1:],
               tmp_path / "blank.png", tmp_path / "bomb.png", "--json")
  assert result.returncode == 2, result.stderr
  errors = result.stderr.strip().splitlines()
  assert len(errors) == 3 and "notes.png: not an image" in errors[0] and "blank" in errors[1]
  assert "bomb.png: declares more pixels" in errors[2]
  answers = [json.loads(line) for line in result.stdout.splitlines()]
  assert [a["file"] for a in answers] == [str(f) for f in files]
  assert [a["digit"] for a in answers] == [int(l) for l in labels]
  for answer in answers:
    assert abs(sum(answer["probabilities"]) - 1) < 1e-4

  plain = run(ROOT / "results", files[0])
  assert plain.returncode == 0, plain.stderr
  assert plain.stdout.startswith(f"{files[0]}: {labels[0]}  ({labels[0]}: ")


def test_a_folder_without_a_run_exits_2_and_writes_nothing(tmp_path):
  result = run(tmp_path, tmp_path / "x.png")
  assert result.returncode == 2
  assert result.stderr.count("\n") == 1 and "not a run folder" in result.stderr
  (tmp_path / "config.json").write_text((ROOT / "results" / "config.json").read_text())
  result = run(tmp_path, tmp_path / "x.png")
  assert result.returncode == 2 and "no checkpoints" in result.stderr
  assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]


def test_loading_a_run_says_nothing_it_has_no_reason_to():
  """`inference.load_run` of a --precise-bn run (results/) as a library user calls it: it
  restores the precise statistics apart, and orbax's warning that the first restore left
  them out (twice, through absl) is not shown; nothing else is either."""
  loaded = subprocess.run(
      [sys.executable, "-c", "from mnist_jax import inference; "
       "print(inference.load_run('results').batch_norm_statistics)"],
      cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert loaded.returncode == 0 and loaded.stderr == "", loaded.stderr
  assert loaded.stdout == "precise\n", loaded.stdout
