"""XLA:CPU settings that make training fast on a few CPU cores. `import mnist_jax` chooses
the fast convolutions (unless the user set that XLA option, or $MNIST_JAX_FAST_CONVOLUTIONS
is 0; an XLA flag, it takes effect only if JAX has not started its backends yet); train.py
also splits the CPU into host devices. (The layers themselves are computed for XLA:CPU by the
"cpu" formulation: mnist_jax/cpu_formulation.py.)
Results are unchanged beyond float rounding (tests/cpu_test.py); no setting here
changes anything on GPU or TPU.

The rounding is larger, though: against float64, TinyNet's float32 gradients are
within ~1e-6 (relative) with the default convolutions and ~1e-5 (one BatchNorm bias
1e-3) with Eigen's; tests/torch_parity_test.py checks the default path at 1e-4.
"""

import os

# This jaxlib routes CPU convolutions to YNNPACK, whose weight gradients are slow
# for these shapes; the empty fusion type sends them to Eigen instead. On 2 cores
# (benchmarks/benchmark.py with and without MNIST_JAX_FAST_CONVOLUTIONS=0), a training
# epoch: TinyNet b256 43.1 -> 31.3 s, Net b512 588 -> 210 s.
FAST_CONV_FLAG = "--xla_cpu_experimental_ynn_fusion_type="
# "0": leave XLA's own CPU convolution path (YNNPACK) as it is, at import and in train.py.
FAST_CONV_ENV = "MNIST_JAX_FAST_CONVOLUTIONS"

# The batch split over two CPU "devices" (parallel.py's data parallelism): each runs
# its half in its own thread, which keeps both cores busier than one device's
# intra-op threads do. On 2 cores (benchmarks/benchmark.py --host-devices 1 and 2):
# TinyNet b256 41.0 -> 31.3 s, Net b512 218 -> 210 s; 4 devices were slower than 2.
HOST_DEVICES = 2

# When those devices' threads already fill the cores, Eigen's own thread pool on top of
# them oversubscribes the cores. Single-threaded Eigen kernels, on 2 cores: a TinyNet
# b256 step 90.4 / 83.0 / 91.9 -> 85.4 / 80.4 / 78.8 ms (benchmarks/profile_step.py
# --host-devices 2 --steps 40, alternating with XLA_FLAGS=--xla_cpu_multi_thread_eigen=true);
# Net's steps unchanged; 5 training steps of either model bitwise the same.
SINGLE_THREAD_EIGEN_FLAG = "--xla_cpu_multi_thread_eigen=false"


def use_fast_convolutions() -> None:
  """Adds FAST_CONV_FLAG to XLA_FLAGS unless the user set that option or opted out
  ($MNIST_JAX_FAST_CONVOLUTIONS=0). `import mnist_jax` calls it. XLA reads its flags when JAX
  starts its backends (at the first computation), so later it changes nothing: JAX offers
  no public way to tell whether they run, so nothing warns of that (README, "Using the step
  functions": import mnist_jax before running JAX code)."""
  if os.environ.get(FAST_CONV_ENV) == "0":
    return
  _add_flag(FAST_CONV_FLAG)


def use_host_devices(batch_size: int, count: int = HOST_DEVICES) -> None:
  """Splits the CPU into `count` devices when they divide the batch and the user has
  not chosen a number (Eigen single-threaded if they fill the cores); call before JAX
  initialises its backends."""
  import jax  # pylint: disable=import-outside-toplevel  # here: `import mnist_jax` stays light
  user_chose = (jax.config.jax_num_cpu_devices >= 0
                or "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""))
  cores = os.cpu_count() or 1
  if not user_chose and batch_size % count == 0 and cores >= count:
    jax.config.update("jax_num_cpu_devices", count)
    if cores == count:  # the devices' own threads fill the cores
      _add_flag(SINGLE_THREAD_EIGEN_FLAG)


def _user_set(flag: str) -> bool:
  return flag.split("=")[0] in os.environ.get("XLA_FLAGS", "")


def _add_flag(flag: str) -> None:
  """Appends `flag` to XLA_FLAGS unless the user set that option."""
  if not _user_set(flag):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flag}".strip()
