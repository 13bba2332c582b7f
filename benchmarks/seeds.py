"""What N seeds cost against one: a training step of N seeds together, per way of
mapping over the seed axis, beside N times one seed's step.

    python benchmarks/seeds.py --data-dir ../shared/data/mnist --seeds 8

With train.py's XLA:CPU settings (mnist_jax.cpu) and its jitted step
(`epoch.jit_epoch_functions`), TinyNet at batch 256 by default. Each variant times
`--steps` steps after a warm-up (compile); `--repeats` cycles through the variants
that many times and reports each one's median. Variants: the library's seed maps
(`vmap`, `unroll`) and `lax.map` (a loop over the seeds on the device, built here
from the same step). Prints a table, the CPU first.
"""

import argparse
import functools
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from mnist_jax import cpu  # pylint: disable=wrong-import-position


def cpu_name() -> str:
  try:
    out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    flags = fields.get("Flags", "")
    isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    return f"{fields['Model name'].strip()} ({isa}), {os.cpu_count()} cores"
  except (OSError, subprocess.CalledProcessError, KeyError):
    return f"{os.cpu_count()} cores"


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--data-dir", required=True)
  parser.add_argument("--seeds", type=int, default=8)
  parser.add_argument("--model", default="tiny")
  parser.add_argument("--batch-size", type=int, default=256)
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args()

  cpu.use_fast_convolutions()
  cpu.use_host_devices(args.batch_size)
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from mnist_jax import Config, epoch, input_pipeline, load_mnist, parallel  # pylint: disable=import-outside-toplevel

  mnist = load_mnist(args.data_dir)
  mesh = parallel.make_mesh()
  train = input_pipeline.to_device(mnist["train"], mesh)
  num_train = len(mnist["train"].labels)
  steps_per_epoch = input_pipeline.num_batches(num_train, args.batch_size)
  base = Config(model=args.model, batch_size=args.batch_size, learning_rate=0.01)

  def lax_map_step(config):
    step = functools.partial(epoch.train_batch, steps_per_epoch=steps_per_epoch,
                             batch_size=config.batch_size, augment=True, mesh=mesh)
    return jax.jit(lambda state, sums, split, order, key: jax.lax.map(
        lambda xs: step(xs[0], xs[1], split, xs[2], xs[3]), (state, sums, order, key)),
                   donate_argnums=(0, 1))

  def make(variant):
    """(jitted step, its arguments) for one variant."""
    config = base.replace(num_seeds=1 if variant == "one seed" else args.seeds,
                          seed_map=variant if variant in ("vmap", "unroll") else None)
    keys = epoch.run_keys(config)
    state = epoch.init_state(config, keys.init, steps_per_epoch)
    fns = epoch.jit_epoch_functions(config, num_train, 1000, mesh)
    order = fns.order(keys.data, np.int32(1))
    step = lax_map_step(config) if variant == "lax.map" else fns.train_steps(1)
    return step, parallel.replicate(
        (state, epoch.zero_sums(config.num_seeds), order, keys.augment), mesh)

  variants = ["one seed", "unroll", "vmap", "lax.map"]
  compiled, times = {}, {v: [] for v in variants}
  for _ in range(args.repeats):
    for variant in variants:
      if variant not in compiled:
        step, (state, sums, order, key) = make(variant)
        start = time.perf_counter()
        state, sums = step(state, sums, train, order, key)
        jax.block_until_ready(sums)
        compiled[variant] = (step, time.perf_counter() - start, [state, sums, order, key])
      step, _, carried = compiled[variant]
      state, sums, order, key = carried
      start = time.perf_counter()
      for _ in range(args.steps):
        state, sums = step(state, sums, train, order, key)
      jax.block_until_ready(sums)
      times[variant].append((time.perf_counter() - start) / args.steps)
      carried[:2] = state, sums

  one = float(np.median(times["one seed"]))
  print(f"{cpu_name()}; {jax.device_count()} x {jax.devices()[0].device_kind}; jax "
        f"{jax.__version__}; {args.model} b{args.batch_size}, {args.seeds} seeds, "
        f"{args.steps} steps x {args.repeats} repeats")
  print("| variant | warm-up (compile) | ms per step | training epoch | "
        f"vs {args.seeds} x one seed |")
  print("|---|---|---|---|---|")
  for variant in variants:
    step_s = float(np.median(times[variant]))
    n = 1 if variant == "one seed" else args.seeds
    print(f"| {variant}{'' if n == 1 else f' ({n} seeds)'} | {compiled[variant][1]:.1f} s "
          f"| {1000 * step_s:.0f} | {step_s * steps_per_epoch:.1f} s "
          f"| {'' if n == 1 else f'{step_s / (n * one):.2f}x'} |")


if __name__ == "__main__":
  main()
