"""What N runs cost against one: a training step of N seeds together, per way of
mapping over the run axis, and of a sweep of N learning rates, beside N times one run's step.

    python -m benchmarks.seeds --data-dir ../shared/data/mnist --seeds 8

With train.py's XLA:CPU settings (mnist_jax.cpu) and its jitted step
(`epoch.jit_epoch_functions`), TinyNet at batch 256 by default. Each variant times
`--steps` steps after a warm-up (compile); `--repeats` cycles through the variants
that many times and reports each one's median. Variants: the library's seed maps
(`vmap`, `unroll`), `lax.map` (a loop over the seeds on the device, built here
from the same step), and a sweep (`--sweep learning_rate=...`, N values, one seed, the
backend's default map). Prints a table, the CPU first.
"""

import argparse
import functools
import time

from benchmarks import common


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--data-dir", required=True)
  parser.add_argument("--seeds", type=int, default=8)
  parser.add_argument("--model", default="tiny")
  parser.add_argument("--batch-size", type=int, default=256)
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args()

  common.use_train_py_settings(args.batch_size)
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from mnist_jax import Config, Execution, epoch, input_pipeline, load_mnist, run_axis  # pylint: disable=import-outside-toplevel

  mnist = load_mnist(args.data_dir)
  base = Config(model=args.model, batch_size=args.batch_size, learning_rate=0.01)

  def lax_map_step(run):
    step = functools.partial(epoch.train_batch, steps_per_epoch=run.steps_per_epoch,
                             batch_size=run.config.batch_size, augment=True, mesh=run.mesh)
    return jax.jit(lambda state, sums, split, order, key, hyperparams: jax.lax.map(
        lambda xs: step(xs[0], xs[1], split, xs[2], xs[3], xs[4]),
        (state, sums, order, key, hyperparams)), donate_argnums=(0, 1))

  def make(variant):
    """(jitted step, its arguments) for one variant."""
    if variant == "sweep":  # learning rates around the headline's, each with one seed
      config = base.replace(sweep=(("learning_rate", tuple(
          float(f"{0.01 * 2 ** (k - args.seeds // 2):.3g}") for k in range(args.seeds))),))
    else:
      config = base.replace(num_seeds=1 if variant == "one seed" else args.seeds)
    execution = Execution(seed_map=variant if variant in ("vmap", "unroll") else None)
    run = common.build(args.data_dir, config, execution, mnist)
    step = lax_map_step(run) if variant == "lax.map" else run.fns.train_steps(1)
    return step, run.train, (run.state, run.zero_sums(), run.order(1), run.keys.augment,
                             run.hyperparams(1))

  variants = ["one seed", "unroll", "vmap", "lax.map", "sweep"]
  compiled, times = {}, {v: [] for v in variants}
  for _ in range(args.repeats):
    for variant in variants:
      if variant not in compiled:
        step, train, (state, sums, order, key, hyperparams) = make(variant)
        start = time.perf_counter()
        state, sums = step(state, sums, train, order, key, hyperparams)
        jax.block_until_ready(sums)
        compiled[variant] = (step, time.perf_counter() - start, train,
                             [state, sums, order, key, hyperparams])
      step, _, train, carried = compiled[variant]
      state, sums, order, key, hyperparams = carried
      start = time.perf_counter()
      for _ in range(args.steps):
        state, sums = step(state, sums, train, order, key, hyperparams)
      jax.block_until_ready(sums)
      times[variant].append((time.perf_counter() - start) / args.steps)
      carried[:2] = state, sums
  steps_per_epoch = input_pipeline.num_batches(len(mnist["train"].labels), args.batch_size)

  one = float(np.median(times["one seed"]))
  print(f"{common.cpu_description()}; {jax.device_count()} x {jax.devices()[0].device_kind}; jax "
        f"{jax.__version__}; {args.model} b{args.batch_size}, {args.seeds} seeds, "
        f"{args.steps} steps x {args.repeats} repeats")
  print("| variant | warm-up (compile) | ms per step | training epoch | "
        f"vs {args.seeds} x one seed |")
  print("|---|---|---|---|---|")
  for variant in variants:
    step_s = float(np.median(times[variant]))
    n = 1 if variant == "one seed" else args.seeds
    runs = f" ({n} learning rates, {run_axis.default_seed_map()})" if variant == "sweep" else (
        "" if n == 1 else f" ({n} seeds)")
    print(f"| {variant}{runs} | {compiled[variant][1]:.1f} s "
          f"| {1000 * step_s:.0f} | {step_s * steps_per_epoch:.1f} s "
          f"| {'' if n == 1 else f'{step_s / (n * one):.2f}x'} |")


if __name__ == "__main__":
  main()
