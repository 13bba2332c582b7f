"""The entry points' persistent compilation cache (mnist_jax.cli): where it goes, that a
second start loads what the first compiled, that other XLA flags compile afresh, and that
it can be turned off or be unwritable without failing the command."""

import os
import subprocess
import sys

from PIL import Image

from conftest import ROOT
from mnist_jax import cli


def _predict(picture, *flags, xla_flags="", cache_home=None):
  # Without the suite's own cache settings, as a user's shell has none.
  env = {k: v for k, v in os.environ.items()
         if not k.startswith(("JAX_COMPILATION_CACHE", "JAX_PERSISTENT_CACHE", cli.CACHE_ENV))}
  env["XLA_FLAGS"] = xla_flags
  if cache_home is not None:
    env["XDG_CACHE_HOME"] = str(cache_home)
  return subprocess.run([sys.executable, str(ROOT / "predict.py"), str(ROOT / "results"),
                         str(picture), *map(str, flags)], env=env, capture_output=True,
                        text=True, timeout=300)


def _entries(folder):
  return sorted(p.name for p in folder.rglob("*-cache"))


def _last_reads(folder):
  """Each entry's last use, as JAX's cache records it when it reads (or writes) the entry."""
  return {p.name: p.read_bytes() for p in folder.rglob("*-atime")}


def test_a_second_start_loads_what_the_first_compiled(tmp_path, mnist):
  picture = tmp_path / "digit.png"
  Image.fromarray(mnist["test"].images[0, ..., 0]).save(picture)
  cache = tmp_path / "cache"

  first = _predict(picture, "--compilation-cache", cache)
  assert first.returncode == 0, first.stderr
  folders = list(cache.iterdir())
  assert len(folders) == 1 and folders[0].name.startswith(os.uname().machine)  # per CPU
  entries = _entries(cache)
  assert entries  # the ensemble's program, at least

  written = _last_reads(cache)
  assert len(written) == len(entries)
  second = _predict(picture, "--compilation-cache", cache)
  assert second.returncode == 0 and second.stdout == first.stdout, second.stderr
  assert _entries(cache) == entries  # nothing compiled anew
  read = _last_reads(cache)
  assert read.keys() == written.keys() and all(read[k] != written[k] for k in read)  # all loaded

  # JAX keys entries by XLA's flags: another setting compiles its own programs.
  other = _predict(picture, "--compilation-cache", cache,
                   xla_flags="--xla_cpu_enable_fast_min_max=true")
  assert other.returncode == 0, other.stderr
  assert set(entries) < set(_entries(cache))


def test_off_and_an_unwritable_folder_still_predict(tmp_path, mnist):
  picture = tmp_path / "digit.png"
  Image.fromarray(mnist["test"].images[0, ..., 0]).save(picture)
  home = tmp_path / "xdg"  # where the cache would go by default
  result = _predict(picture, "--compilation-cache", "off", cache_home=home)
  assert result.returncode == 0 and result.stderr == "", result.stderr
  assert not home.exists()  # no cache written anywhere
  (tmp_path / "file").write_text("x")  # a folder cannot be made under a file
  result = _predict(picture, "--compilation-cache", tmp_path / "file" / "cache")
  assert result.returncode == 0, result.stderr
  assert result.stderr.count("\n") == 1 and "no compilation cache" in result.stderr
  assert result.stdout.startswith(f"{picture}: ")
