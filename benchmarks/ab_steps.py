"""Variants of a training step timed against each other in one process, in alternating blocks.

    python benchmarks/ab_steps.py --data-dir ../shared/data/mnist \
      --variants benchmarks/variants/bn_sums_as_reductions.py

Separate runs on a shared machine differ by more than most changes gain (±15% here), so each
variant is compiled in the same process (train.py's XLA:CPU settings and host devices) and
the variants take turns, `--steps` steps each, for `--rounds` rounds. Prints each
variant's ms per step and its ratio to the first variant's, per round.

A variants file defines `VARIANTS = {name: patch}`: `patch()` changes mnist_jax before that
variant's step is compiled and returns a function that undoes the change (None: as is).
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # pylint: disable=wrong-import-position


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--data-dir", required=True)
  parser.add_argument("--variants", required=True, help="a file defining VARIANTS")
  parser.add_argument("--model", default="tiny", choices=["tiny", "net"])
  parser.add_argument("--rounds", type=int, default=8)
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--reverse", action="store_true",
                      help="the variants in the opposite order: whether going first matters")
  args = parser.parse_args()
  batch_size = 256 if args.model == "tiny" else 512
  common.use_train_py_settings(batch_size)
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from mnist_jax import Config, epoch, load_mnist  # pylint: disable=import-outside-toplevel

  namespace = {"__file__": os.path.abspath(args.variants)}  # as if imported
  with open(args.variants) as f:
    exec(compile(f.read(), args.variants, "exec"), namespace)  # pylint: disable=exec-used
  mnist = load_mnist(args.data_dir)
  config = Config(model=args.model, batch_size=batch_size)

  def run_steps(run, num_steps):
    step = run.fns.train_steps(1)
    for i in range(num_steps):
      run.state, run.sums = step(run.state, run.sums, run.train, run.order, run.keys.augment,
                                 run.hyperparams)
      if (i + 1) % epoch.MAX_QUEUED_PROGRAMS == 0:
        jax.block_until_ready(run.sums)
    jax.block_until_ready(run.sums)

  runs, ms = {}, {}
  variants = list(namespace["VARIANTS"].items())
  for name, patch in variants[::-1] if args.reverse else variants:
    undo = patch() if patch else None
    runs[name], ms[name] = common.setup_run(args.data_dir, config, mnist), []
    run_steps(runs[name], 3)  # compiles while the patch is in place
    if undo:
      undo()
  for _ in range(args.rounds):
    for name, run in runs.items():
      start = time.perf_counter()
      run_steps(run, args.steps)
      ms[name].append(1000 * (time.perf_counter() - start) / args.steps)
  first = np.array(next(iter(ms.values())))
  print(f"{common.cpu_description()}\n{args.model}, batch {batch_size}, {jax.device_count()} x "
        f"{jax.devices()[0].device_kind}: ms per step, {args.rounds} rounds of {args.steps} steps")
  for name, times in ms.items():
    times = np.array(times)
    print(f"  {name:24s} median {np.median(times):6.1f}  ratio to {next(iter(runs))}: median "
          f"{np.median(times / first):.3f} ({', '.join(f'{r:.2f}' for r in times / first)})")


if __name__ == "__main__":
  main()
