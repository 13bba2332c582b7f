"""export.py: the committed results/ model as a file that runs with jax alone."""

import subprocess
import sys

import jax
import numpy as np

from conftest import ROOT
from tolerance import assert_as_accurate, to_float64
from mnist_jax import augment, inference

# A fresh process that has jax and numpy and nothing of flax or this project.
LOAD_SCRIPT = """
import sys
import jax, numpy as np
exported = jax.export.deserialize(open(sys.argv[1], "rb").read())
images = np.load(sys.argv[2])
logits = [np.asarray(exported.call(images[:7])), np.asarray(exported.call(images[7:]))]
assert not {"flax", "mnist_jax", "optax", "orbax"} & {m.split(".")[0] for m in sys.modules}
np.save(sys.argv[3], np.concatenate(logits))
"""


def test_the_exported_model_runs_with_jax_alone_and_gives_eval_logits(tmp_path, mnist):
  """(Over a file already there: refused, and kept as it was, without --force.)"""
  out = tmp_path / "model.jaxexport"
  out.write_bytes(b"someone's file")
  command = [sys.executable, str(ROOT / "export.py"), str(ROOT / "results"), "--out", str(out),
             "--seed-index", "3"]
  refused = subprocess.run(command, capture_output=True, text=True, timeout=600)
  assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
  assert "exists; pass --force to overwrite it" in refused.stderr
  assert out.read_bytes() == b"someone's file"
  result = subprocess.run(command + ["--force"], capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr
  images = mnist["test"].images[:12]
  np.save(tmp_path / "images.npy", images)
  loaded = subprocess.run([sys.executable, "-c", LOAD_SCRIPT, str(out), str(tmp_path / "images.npy"),
                           str(tmp_path / "logits.npy")], capture_output=True, text=True,
                          timeout=600, cwd=tmp_path)  # cwd: the project is not importable there
  assert loaded.returncode == 0, loaded.stderr
  exported = np.load(tmp_path / "logits.npy")  # batches of 7 and 5: the batch size is free

  # The same seed's eval-mode logits here, with the statistics the run answers with; the
  # exported program is the same float32 computation compiled elsewhere: float64 the yardstick.
  state = inference.one_seed(inference.load_run(str(ROOT / "results")), 3)
  def logits(state):
    return state.apply_fn({"params": state.params, "batch_stats": state.batch_stats},
                          augment.normalize(images), train=False)
  reference = jax.jit(logits)(state)
  with jax.enable_x64(True):
    exact = jax.jit(logits)(to_float64(state))
  assert exported.shape == (12, 10)
  assert_as_accurate(exported, reference, exact, "exported logits")
  assert (exported.argmax(-1) == mnist["test"].labels[:12]).mean() >= 11 / 12


def test_bad_run_dir_and_seed_index_exit_2_and_write_nothing(tmp_path):
  for args, words in (([tmp_path], "not a run folder"),
                      ([ROOT / "results", "--seed-index", 8], "the run has 8 seed(s)")):
    result = subprocess.run([sys.executable, str(ROOT / "export.py"), *map(str, args),
                             "--out", str(tmp_path / "m.jaxexport")],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert words in result.stderr
  assert list(tmp_path.iterdir()) == []
