"""What the entry points (train.py, predict.py, demo.py, export.py) share: one error style
and JAX's persistent compilation cache."""

import argparse
import hashlib
import os
import platform
import sys

from mnist_jax.config import FORMULATIONS

CACHE_ENV = "MNIST_JAX_COMPILATION_CACHE"  # a folder, or "off"
# Every program: a run's few are all worth keeping (the smallest, its keys', compiles in
# 0.1 s on 2 CPU cores and loads in 0.01 s), and JAX hashes each program for the lookup
# whether or not it would write it.
CACHE_MIN_COMPILE_SECONDS = 0
CACHE_MAX_BYTES = 1 << 30  # least recently used entries go beyond this


class ArgumentParser(argparse.ArgumentParser):
  """argparse whose errors are one line naming the flag and why, exit status 2; every
  entry point also takes `--compilation-cache`."""

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    self.add_argument(
        "--compilation-cache", metavar="DIR",
        help="where JAX keeps compiled programs between runs, or 'off'; default: "
             f"${CACHE_ENV}, else {default_cache_dir()}")

  def error(self, message):
    self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def add_run_argument(parser: argparse.ArgumentParser) -> None:
  """RUN_DIR, the folder train.py wrote, which setting of a sweep answers, and how the model
  computes (`inference.load_run`'s arguments)."""
  parser.add_argument("workdir", metavar="RUN_DIR", help="a folder train.py wrote")
  parser.add_argument("--setting", type=int, metavar="K",
                      help="a --sweep run: the seeds of setting K answer (sweep.csv lists "
                      "them); default: the best by final test accuracy")
  parser.add_argument("--formulation", choices=FORMULATIONS, default="auto",
                      help="how the model's layers are computed (train.py's flag: the same "
                      "answers within float rounding, whichever the run trained with); "
                      "default: auto")


def default_cache_dir() -> str:
  """The user's cache folder (XDG), as other tools keep theirs."""
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "mnist-jax", "jax-compilation-cache")


def _instruction_set() -> str:
  """A name for this CPU's instruction-set extensions. JAX keys each entry by its own and
  XLA's versions, the backend and XLA_FLAGS, not by the host CPU, yet XLA:CPU compiles for
  the CPU it runs on; a cache folder shared by other machines (a home folder on a cluster)
  would hand one machine's code to another. So each instruction set gets its own folder."""
  flags = ""
  try:
    with open("/proc/cpuinfo") as f:
      flags = next((l for l in f if l.startswith(("flags", "Features"))), "")
  except OSError:
    pass
  digest = hashlib.sha256(" ".join(sorted(flags.split(":")[-1].split())).encode()).hexdigest()
  return f"{platform.machine()}-{digest[:12]}"


def use_compilation_cache(folder: str | None) -> str | None:
  """Turns on JAX's persistent compilation cache and returns the folder it uses (None:
  no cache). `folder` is `--compilation-cache`: a folder, or "off". Without it: a cache JAX
  was already given (JAX_COMPILATION_CACHE_DIR) as it is, else $MNIST_JAX_COMPILATION_CACHE
  (a folder or "off"), else the user's cache folder. Call before the first compilation."""
  import jax  # pylint: disable=import-outside-toplevel  # here: --help needs no JAX
  if folder is None and jax.config.jax_compilation_cache_dir:
    return jax.config.jax_compilation_cache_dir
  folder = folder or os.environ.get(CACHE_ENV) or default_cache_dir()
  if folder == "off":
    return None
  path = os.path.join(folder, _instruction_set())
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:  # a read-only home, say: slower, not wrong
    print(f"note: no compilation cache: cannot create {path} ({e.strerror}); pass "
          "--compilation-cache DIR or off", file=sys.stderr)
    return None
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", CACHE_MIN_COMPILE_SECONDS)
  jax.config.update("jax_compilation_cache_max_size", CACHE_MAX_BYTES)
  return path
