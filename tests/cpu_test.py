"""The CPU convolution setting train.py uses changes nothing beyond float rounding."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT

# One SGD step of each model on real digits, printed for comparison between processes.
SCRIPT = """
import json, sys
from mnist_jax import cpu
if sys.argv[2] == "eigen":
  cpu.use_fast_convolutions()
import jax, optax
from mnist_jax import TrainState, data, get_model, train_step
mnist = data.load_mnist(sys.argv[1])
batch = {"image": mnist["train"].images[:64], "label": mnist["train"].labels[:64]}
out = {}
for name in ("tiny", "net"):
  model = get_model(name)
  variables = model.init(jax.random.key(0), batch["image"][:1] / 1.0)
  state = TrainState.create(apply_fn=model.apply, params=variables["params"],
                            batch_stats=variables.get("batch_stats", {}), tx=optax.sgd(0.1))
  state, metrics = jax.jit(train_step)(state, batch, jax.random.key(1))
  out[name] = {"loss": float(metrics["loss_sum"]) / 64,
               "params": [x.ravel().tolist() for x in jax.tree.leaves(state.params)]}
print(json.dumps(out))
"""


def _step(mnist_dir, mode):
  env = dict(os.environ, PYTHONPATH=str(ROOT))
  env.pop("XLA_FLAGS", None)
  result = subprocess.run([sys.executable, "-c", SCRIPT, mnist_dir, mode], env=env,
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr
  return json.loads(result.stdout.strip().splitlines()[-1])


def test_eigen_convolutions_match_the_default_path(mnist_dir):
  default, eigen = _step(mnist_dir, "default"), _step(mnist_dir, "eigen")
  for name in ("tiny", "net"):
    assert eigen[name]["loss"] == pytest.approx(default[name]["loss"], rel=1e-5)
    for a, b in zip(default[name]["params"], eigen[name]["params"]):
      np.testing.assert_allclose(a, b, atol=1e-5)


def _devices(batch_size, env_flags=""):
  code = ("import sys; from mnist_jax import cpu; cpu.use_host_devices(int(sys.argv[1])); "
          "import jax; print(jax.device_count())")
  env = dict(os.environ, PYTHONPATH=str(ROOT), XLA_FLAGS=env_flags, JAX_PLATFORMS="cpu")
  result = subprocess.run([sys.executable, "-c", code, str(batch_size)], env=env,
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr
  return int(result.stdout.strip().splitlines()[-1])


def test_host_devices_split_an_even_batch_and_respect_the_users_choice():
  # (That a batch split over CPU devices trains as on one: tests/parallel_test.py.)
  assert _devices(256) == min(2, os.cpu_count())
  assert _devices(255) == 1  # 2 devices could not split it
  assert _devices(256, "--xla_force_host_platform_device_count=3") == 3
