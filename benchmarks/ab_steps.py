"""Variants of a training step timed against each other in one process, in alternating blocks.

    python benchmarks/ab_steps.py --data-dir ../shared/data/mnist \
      --variants benchmarks/variants/bn_backward_reductions.py

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

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mnist_jax import cpu  # pylint: disable=wrong-import-position


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--data-dir", required=True)
  parser.add_argument("--variants", required=True, help="a file defining VARIANTS")
  parser.add_argument("--model", default="tiny", choices=["tiny", "net"])
  parser.add_argument("--rounds", type=int, default=8)
  parser.add_argument("--steps", type=int, default=10)
  args = parser.parse_args()
  batch_size = 256 if args.model == "tiny" else 512
  cpu.use_fast_convolutions()
  cpu.use_host_devices(batch_size)
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from mnist_jax import Config, epoch, input_pipeline, load_mnist, parallel  # pylint: disable=import-outside-toplevel

  namespace = {}
  with open(args.variants) as f:
    exec(compile(f.read(), args.variants, "exec"), namespace)  # pylint: disable=exec-used
  mnist = load_mnist(args.data_dir)
  mesh = parallel.make_mesh()
  config = Config(model=args.model, batch_size=batch_size)
  num_train = len(mnist["train"].labels)
  steps_per_epoch = input_pipeline.num_batches(num_train, batch_size)
  keys = epoch.run_keys(config)
  split = input_pipeline.to_device(mnist["train"], mesh)
  order = parallel.replicate(input_pipeline.shuffled_order(keys.data, num_train, batch_size), mesh)
  augment_key = parallel.replicate(keys.augment, mesh)

  def run_steps(run, num_steps):
    for i in range(num_steps):
      run["state"], run["sums"] = run["step"](run["state"], run["sums"], split, order, augment_key)
      if (i + 1) % epoch.MAX_QUEUED_PROGRAMS == 0:
        jax.block_until_ready(run["sums"])
    jax.block_until_ready(run["sums"])

  runs = {}
  for name, patch in namespace["VARIANTS"].items():
    undo = patch() if patch else None
    state = epoch.init_state(config, keys.init, steps_per_epoch)
    runs[name] = {"step": epoch.jit_epoch_functions(config, num_train, 1000, mesh).train_steps(1),
                  "state": parallel.replicate(state, mesh),
                  "sums": parallel.replicate(epoch.zero_sums(), mesh), "ms": []}
    run_steps(runs[name], 3)  # compiles while the patch is in place
    if undo:
      undo()
  for _ in range(args.rounds):
    for run in runs.values():
      start = time.perf_counter()
      run_steps(run, args.steps)
      run["ms"].append(1000 * (time.perf_counter() - start) / args.steps)
  first = np.array(next(iter(runs.values()))["ms"])
  print(f"{args.model}, batch {batch_size}, {jax.device_count()} CPU devices: ms per step, "
        f"{args.rounds} rounds of {args.steps} steps")
  for name, run in runs.items():
    ms = np.array(run["ms"])
    print(f"  {name:24s} median {np.median(ms):6.1f}  ratio to {next(iter(runs))}: median "
          f"{np.median(ms / first):.3f} ({', '.join(f'{r:.2f}' for r in ms / first)})")


if __name__ == "__main__":
  main()
