"""Formulations of a training step timed against each other in one process, in alternating
blocks.

    python -m benchmarks.ab_steps --data-dir ../shared/data/mnist --formulations cpu standard
    python -m benchmarks.ab_steps --data-dir ../shared/data/mnist \
      --variants benchmarks/variants/bn_sums_as_reductions.py

Separate runs on a shared machine differ by more than most changes gain (±15% here), so each
variant is compiled in the same process (train.py's XLA:CPU settings and host devices) and
the variants take turns, `--steps` steps each, for `--rounds` rounds. Prints each
variant's ms per step and its ratio to the first variant's, per round.

A variant is a formulation (`mnist_jax.models.formulation_layers`): a name (`--formulations`),
or an object in a variants file's `VARIANTS = {name: formulation}` (a
`cpu_formulation.CpuFormulation` with other choices, say). Each is built as its own run
(`Execution(formulation=...)`); nothing in the package is changed.
"""

import argparse
import os
import runpy
import time

from benchmarks import common


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--data-dir", required=True)
  variants = parser.add_mutually_exclusive_group(required=True)
  variants.add_argument("--variants", help="a file defining VARIANTS = {name: formulation}")
  variants.add_argument("--formulations", nargs="+", choices=("standard", "cpu", "auto"),
                        help="formulations by name")
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
  from mnist_jax import Config, Execution, load_mnist  # pylint: disable=import-outside-toplevel

  if args.variants:
    named = runpy.run_path(os.path.abspath(args.variants))["VARIANTS"]
  else:
    named = {name: name for name in args.formulations}
  mnist = load_mnist(args.data_dir)
  config = Config(model=args.model, batch_size=batch_size)
  steppers, ms = {}, {}
  for name, formulation in list(named.items())[::-1 if args.reverse else 1]:
    run = common.build(args.data_dir, config, Execution(formulation=formulation), mnist)
    steppers[name], ms[name] = common.Stepper(run), []
    steppers[name](3)  # compiles
  for _ in range(args.rounds):
    for name, steps in steppers.items():
      start = time.perf_counter()
      steps(args.steps)
      ms[name].append(1000 * (time.perf_counter() - start) / args.steps)
  first_name = next(iter(ms))
  first = np.array(ms[first_name])
  print(f"{common.cpu_description()}\n{args.model}, batch {batch_size}, {jax.device_count()} x "
        f"{jax.devices()[0].device_kind}: ms per step, {args.rounds} rounds of {args.steps} steps")
  for name, times in ms.items():
    times = np.array(times)
    print(f"  {name:24s} median {np.median(times):6.1f}  ratio to {first_name}: median "
          f"{np.median(times / first):.3f} ({', '.join(f'{r:.2f}' for r in times / first)})")


if __name__ == "__main__":
  main()
