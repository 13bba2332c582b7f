"""The CPU convolutions `import mnist_jax` chooses change nothing beyond float rounding."""

import os
import re
import subprocess
import sys

import numpy as np

from conftest import ROOT
from tolerance import sum_order_bound

# Every convolution of both models (their shapes, batch 64): output, input gradient and
# weight gradient, saved for comparison between processes. What mnist_jax.cpu changes is
# which library computes these, nothing else. Also saved: the same three computed from
# the absolute values of the operands, which is the sum of the terms' magnitudes that
# the rounding bound needs (a convolution and its gradients are linear in each operand).
SCRIPT = """
import sys
import numpy as np
import mnist_jax  # Eigen's convolutions, unless MNIST_JAX_FAST_CONVOLUTIONS=0 ("default")
import jax, jax.numpy as jnp

def conv(x, w, padding):
  return jax.lax.conv_general_dilated(x, w, (1, 1), padding,
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))

def layer(w, x, dy, padding):
  # One program per layer (compiling is most of this script's time; numpy draws the
  # operands, kernels too: jax.random's programs and a model's initialisation take seconds
  # to compile); the magnitudes only where the bound is taken from, the default path.
  y, vjp = jax.vjp(lambda x, w: conv(x, w, padding), x, w)
  if sys.argv[2] == "eigen":
    return (y, *vjp(dy))
  abs_y, abs_vjp = jax.vjp(lambda x, w: conv(x, w, padding), jnp.abs(x), jnp.abs(w))
  return (y, *vjp(dy), abs_y, *abs_vjp(jnp.abs(dy)))

out = {}
for name in ("tiny", "net"):
  shapes = {"tiny": [(28, 1, 20), (14, 20, 28), (7, 28, 64)],
            "net": [(28, 1, 32), (26, 32, 64), (12, 64, 128), (10, 128, 256)]}[name]
  padding = "SAME" if name == "tiny" else "VALID"
  for i, (size, c_in, c_out) in enumerate(shapes, start=1):
    rng = np.random.default_rng(i)
    size_out = size if padding == "SAME" else size - 2
    w = rng.standard_normal((3, 3, c_in, c_out), np.float32) / np.sqrt(9 * c_in)
    x = rng.standard_normal((64, size, size, c_in), np.float32)
    dy = rng.standard_normal((64, size_out, size_out, c_out), np.float32)
    values = jax.jit(layer, static_argnums=3)(w, x, dy, padding)
    for key, value in zip(("y", "dx", "dw", "abs_y", "abs_dx", "abs_dw"), values):
      out[f"{name}_conv{i}_{key}"] = np.asarray(value)
    out[f"{name}_conv{i}_terms"] = np.array([9 * c_in, 9 * c_out, 64 * size_out * size_out])
np.savez(sys.argv[3], **out)
"""


def _convolutions(mnist_dir, tmp_path):
  """Both processes at once (each is mostly single-threaded compiling): {mode: arrays}."""
  env = dict(os.environ, PYTHONPATH=str(ROOT))
  env.pop("XLA_FLAGS", None)
  envs = {"default": dict(env, MNIST_JAX_FAST_CONVOLUTIONS="0"), "eigen": env}
  procs = {mode: subprocess.Popen([sys.executable, "-c", SCRIPT, mnist_dir, mode,
                                   str(tmp_path / f"{mode}.npz")], env=envs[mode],
                                  stderr=subprocess.PIPE, text=True)
           for mode in envs}
  for proc in procs.values():
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
  return {mode: np.load(tmp_path / f"{mode}.npz") for mode in procs}


def test_eigen_convolutions_match_the_default_path(tmp_path, mnist_dir):
  results = _convolutions(mnist_dir, tmp_path)
  default, eigen = results["default"], results["eigen"]
  layers = sorted({k.rsplit("_", 1)[0] for k in default.files if k.endswith("_terms")})
  assert len(layers) == 7
  for layer in layers:
    # Each output element is a sum of n products (n = 9*C_in for y, 9*C_out for dx,
    # N*H*W for dw); the two libraries may add them in any order, so they lie within
    # sum_order_bound(n, sum of |products|), element by element.
    for key, n in zip(("y", "dx", "dw"), default[f"{layer}_terms"]):
      bound = sum_order_bound(int(n), 1.0) * default[f"{layer}_abs_{key}"]
      error = np.abs(eigen[f"{layer}_{key}"].astype(np.float64) - default[f"{layer}_{key}"])
      assert np.all(error <= bound), (layer, key, float((error / bound).max()))


def _devices(batch_size, env_flags=""):
  """(device count, whether Eigen runs single-threaded) after cpu.use_host_devices."""
  code = ("import os, sys; from mnist_jax import cpu; cpu.use_host_devices(int(sys.argv[1])); "
          "import jax; print(jax.device_count(), cpu.SINGLE_THREAD_EIGEN_FLAG in os.environ['XLA_FLAGS'])")
  env = dict(os.environ, PYTHONPATH=str(ROOT), XLA_FLAGS=env_flags, JAX_PLATFORMS="cpu")
  result = subprocess.run([sys.executable, "-c", code, str(batch_size)], env=env,
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr
  count, single_thread = result.stdout.strip().splitlines()[-1].split()
  return int(count), single_thread == "True"


def test_host_devices_split_an_even_batch_and_respect_the_users_choice():
  # (That a batch split over CPU devices trains as on one: tests/parallel_test.py.)
  cores = os.cpu_count()
  # Eigen single-threaded only where the devices' own threads fill the cores.
  assert _devices(256) == (min(2, cores), cores <= 2)
  assert _devices(255) == (1, False)  # 2 devices could not split it
  assert _devices(256, "--xla_force_host_platform_device_count=3") == (3, False)
  assert _devices(256, "--xla_cpu_multi_thread_eigen=true")[1] is False


# A researcher's use: a plain `import mnist_jax`, then `jax.jit(train_step)`.
IMPORTER_SCRIPT = """
import numpy as np
import mnist_jax
import jax
state = mnist_jax.create_train_state(jax.random.key(0), mnist_jax.TinyNet(), mnist_jax.Config(),
                                     steps_per_epoch=1)
batch = {"image": np.zeros((8, 28, 28, 1), np.float32), "label": np.zeros(8, np.int32)}
print(jax.jit(mnist_jax.train_step).lower(state, batch, jax.random.key(1)).compile().as_text())
"""


def _convolutions_by_library(hlo: str) -> dict[str, int]:
  """How many of a compiled XLA:CPU program's convolutions YNNPACK runs (inside a fusion of
  kind __ynn_fusion) and how many XLA's own (Eigen) kernels run."""
  ynn_bodies = set(re.findall(r'calls=(%[\w.-]+).*"kind":"__ynn_fusion"', hlo))
  counts, body = {"ynnpack": 0, "eigen": 0}, None
  for line in hlo.splitlines():
    if not line.startswith(" ") and "{" in line:  # a computation begins
      body = line.split()[0]
    elif " convolution(" in line:
      counts["ynnpack" if body in ynn_bodies else "eigen"] += 1
  return counts


def test_a_plain_import_compiles_the_step_with_eigens_convolutions():
  env = dict(os.environ, PYTHONPATH=str(ROOT))
  env.pop("XLA_FLAGS", None)
  # Also the usual `import jax` first: JAX reads XLA's flags when it starts its backends.
  cases = {"import": ("", {}), "after import jax": ("import jax\n", {}),
           "opted out": ("", {"MNIST_JAX_FAST_CONVOLUTIONS": "0"})}
  procs = {how: subprocess.Popen([sys.executable, "-c", first + IMPORTER_SCRIPT],
                                 env=dict(env, **extra), stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
           for how, (first, extra) in cases.items()}
  counts = {}
  for how, proc in procs.items():
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    counts[how] = _convolutions_by_library(out)
  # TinyNet: 3 forward convolutions (conv1 as a matrix product), 2 input and 3 weight gradients.
  assert counts["import"] == counts["after import jax"] == {"ynnpack": 0, "eigen": 7}, counts
  assert counts["opted out"]["ynnpack"] > 0, counts  # XLA's own path, and the check can see it
