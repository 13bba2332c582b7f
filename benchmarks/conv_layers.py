"""Each convolution of a model alone, as a training step runs it: the share of a step that
XLA's trace (benchmarks/profile_step.py) does not show, since XLA:CPU runs convolutions in
Eigen's thread pool and traces only their dispatch.

    python -m benchmarks.conv_layers --model tiny

Per layer (train.py's XLA:CPU settings, one device, the whole batch): the forward pass
through `mnist_jax.conv` (the CPU formulation's) and through XLA's own convolution, and the
input and kernel gradients, in ms (best of 5 x 5 calls) and GFLOP/s; the input gradient also as
one convolution with the full padding (`conv.ROW_SPLIT_UP_TO` 0), which the row split replaces
for Net's conv3 and conv4.
"""

import argparse
import time

from benchmarks import common

# (input size, in channels, out channels, padding) of every convolution.
LAYERS = {"tiny": [(28, 1, 20, "SAME"), (14, 20, 28, "SAME"), (7, 28, 64, "SAME")],
          "net": [(28, 1, 32, "VALID"), (26, 32, 64, "VALID"), (12, 64, 128, "VALID"),
                  (10, 128, 256, "VALID")]}


def best_ms(fn, *args) -> float:
  import jax  # pylint: disable=import-outside-toplevel
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(5):
    start = time.perf_counter()
    for _ in range(5):
      out = fn(*args)
    jax.block_until_ready(out)
    times.append((time.perf_counter() - start) / 5)
  return 1000 * min(times)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--model", default="tiny", choices=sorted(LAYERS))
  parser.add_argument("--batch-size", type=int, help="default: 256 (tiny), 512 (net)")
  args = parser.parse_args()
  batch_size = args.batch_size or (256 if args.model == "tiny" else 512)
  common.use_train_py_settings(batch_size, host_devices=1)
  import jax  # pylint: disable=import-outside-toplevel
  from jax import lax  # pylint: disable=import-outside-toplevel
  from mnist_jax import conv  # pylint: disable=import-outside-toplevel

  print(f"{common.cpu_description()}\n{args.model}, batch {batch_size}, {jax.device_count()} "
        "CPU device: ms (GFLOP/s)")
  total_ms = 0.0
  for size, c_in, c_out, padding in LAYERS[args.model]:
    pads = tuple((int(lo), int(hi)) for lo, hi in
                 lax.padtype_to_pads((size, size), (3, 3), (1, 1), padding))
    x = jax.random.normal(jax.random.key(0), (batch_size, size, size, c_in))
    kernel = jax.random.normal(jax.random.key(1), (3, 3, c_in, c_out))
    ours = jax.jit(lambda x, k, pads=pads: conv.conv2d(x, k, pads))
    xla = jax.jit(lambda x, k, pads=pads: lax.conv_general_dilated(
        x, k, (1, 1), pads, dimension_numbers=("NHWC", "HWIO", "NHWC")))
    dy = jax.random.normal(jax.random.key(2), ours(x, kernel).shape)
    vjp = lambda wrt, row_split=conv.ROW_SPLIT_UP_TO, pads=pads: jax.jit(lambda x, k, dy: jax.vjp(
        lambda *a: conv.conv2d(*a, pads, None, row_split), x, k)[1](dy)[wrt])
    gflop = 2 * dy.size * 9 * c_in / 1e6  # per pass, in units that give GFLOP/s from ms
    row = {"forward": best_ms(ours, x, kernel), "forward (XLA's)": best_ms(xla, x, kernel),
           "input grad": best_ms(vjp(0), x, kernel, dy),
           "input grad (full padding)": best_ms(vjp(0, row_split=0.0), x, kernel, dy),
           "kernel grad": best_ms(vjp(1), x, kernel, dy)}
    # A training step: the forward pass, the kernel gradient, and the input gradient
    # except for the first layer (its input is the data).
    total_ms += row["forward"] + row["kernel grad"] + (row["input grad"] if c_in > 1 else 0)
    print(f"  {size}x{size} {c_in:3d}->{c_out:3d}: " + ", ".join(
        f"{name} {ms:.2f} ({gflop / ms:.0f})" for name, ms in row.items()))
  print(f"  what a training step runs: {total_ms:.1f} ms")


if __name__ == "__main__":
  main()
