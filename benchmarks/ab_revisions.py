"""This checkout's training step against another revision's, in one process, alternating: did a
change make the step slower?

    python -m benchmarks.ab_revisions --data-dir ../shared/data/mnist --before e8d4307
    python -m benchmarks.ab_revisions --data-dir ../shared/data/mnist --before e8d4307 --model net

The other revision's `mnist_jax` is taken from git (`git archive`) into a temporary folder as
a package of another name, `mnist_jax_before`, so that both live in this process: each step is
compiled under the same XLA:CPU settings (train.py's: its host devices, the batch split over
them) and both take turns, `--steps` steps each, for `--rounds` rounds, since separate runs on
a shared machine differ by more than most changes gain. The step is what both revisions offer
the same way: `jax.jit(train_step)` from `create_train_state(key, get_model(name), config)`, on
the first `--batch-size` training images, augmented, and its compiled program is what train.py
runs per step but for the on-device gathering of the batch. Prints each side's ms per step and
the ratio of this checkout's to the other's, per round.
"""

import argparse
import importlib.util
import os
import subprocess
import sys
import tarfile
import tempfile
import time

from benchmarks import common

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BEFORE = "mnist_jax_before"


def import_revision(revision: str):
  """`mnist_jax` as it was at `revision`, imported as the package `mnist_jax_before`."""
  folder = tempfile.mkdtemp()
  archive = subprocess.run(["git", "archive", revision, "mnist_jax"], cwd=ROOT, check=True,
                           capture_output=True).stdout
  archive_path = os.path.join(folder, "package.tar")
  with open(archive_path, "wb") as f:
    f.write(archive)
  with tarfile.open(archive_path) as tar:
    tar.extractall(folder, filter="data")
  package = os.path.join(folder, BEFORE)
  os.rename(os.path.join(folder, "mnist_jax"), package)
  for base, _, names in os.walk(package):
    for name in (n for n in names if n.endswith(".py")):
      path = os.path.join(base, name)
      with open(path) as f:
        text = f.read()
      with open(path, "w") as f:
        f.write(text.replace("mnist_jax", BEFORE))
  spec = importlib.util.spec_from_file_location(
      BEFORE, os.path.join(package, "__init__.py"), submodule_search_locations=[package])
  module = importlib.util.module_from_spec(spec)
  sys.modules[BEFORE] = module
  spec.loader.exec_module(module)
  return module


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--data-dir", required=True)
  parser.add_argument("--before", required=True, help="the git revision to compare against")
  parser.add_argument("--model", default="tiny", choices=["tiny", "net"])
  parser.add_argument("--batch-size", type=int, help="default: 256 (tiny), 512 (net)")
  parser.add_argument("--rounds", type=int, default=8)
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--reverse", action="store_true", help="this checkout's step goes first")
  args = parser.parse_args()
  batch_size = args.batch_size or (256 if args.model == "tiny" else 512)
  common.use_train_py_settings(batch_size)
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  import mnist_jax  # pylint: disable=import-outside-toplevel
  from mnist_jax import parallel  # pylint: disable=import-outside-toplevel
  from benchmarks import peers  # pylint: disable=import-outside-toplevel

  before = import_revision(args.before)
  train = mnist_jax.load_mnist(args.data_dir)["train"]
  inputs = ({"image": train.images[:batch_size], "label": train.labels[:batch_size]},)
  mesh = parallel.make_mesh()
  steps = {}
  sides = [(f"before ({args.before})", before), ("this checkout", mnist_jax)]
  for name, package in sides[::-1] if args.reverse else sides:
    config = package.Config(model=args.model, batch_size=batch_size)
    state = package.create_train_state(jax.random.key(0), package.get_model(args.model), config,
                                       steps_per_epoch=235)
    step = jax.jit(package.train_step)
    key = jax.random.key(1)
    steps[name] = peers.jax_steps(lambda state, batch, step=step: step(state, batch, key),
                                  state, inputs, mesh)
    steps[name](3)  # compiles
  ms = {name: [] for name in steps}
  for _ in range(args.rounds):
    for name, run in steps.items():
      start = time.perf_counter()
      run(args.steps)
      ms[name].append(1000 * (time.perf_counter() - start) / args.steps)
  ratios = np.array(ms["this checkout"]) / np.array(ms[f"before ({args.before})"])
  print(f"{common.cpu_description()}\n{args.model}, batch {batch_size}, {jax.device_count()} x "
        f"{jax.devices()[0].device_kind}: ms per step, {args.rounds} rounds of {args.steps} steps")
  for name, times in ms.items():
    print(f"  {name:24s} median {np.median(times):7.1f}  ({', '.join(f'{t:.1f}' for t in times)})")
  print(f"  this checkout / before: median {np.median(ratios):.3f} "
        f"({', '.join(f'{r:.2f}' for r in ratios)})")


if __name__ == "__main__":
  main()
