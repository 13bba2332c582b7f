"""Where a training step's time goes on this machine: XLA's own per-operation trace.

    python -m benchmarks.profile_step --data-dir ../shared/data/mnist --model tiny

Runs `epoch.train_batch` jitted as train.py runs it (its XLA:CPU settings; `--host-devices`
as there), traces `--steps` steps with `jax.profiler` and prints the step's wall time,
the device time of all its operations added up (over the devices' threads, so it can
exceed the wall time), and the operations that took most, each with the model layer
XLA's metadata names; the optimized HLO stays in the folder it names last.

Convolutions run in Eigen's thread pool, where the trace sees only their dispatch; pinned
to one core with single-threaded Eigen they show in full (a device's share of a step):

    XLA_FLAGS=--xla_cpu_multi_thread_eigen=false taskset -c 0 python -m benchmarks.profile_step \
      --data-dir ../shared/data/mnist --model tiny --batch-size 128
"""

import argparse
import collections
import glob
import gzip
import json
import os
import re
import tempfile
import time

from benchmarks import common


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--data-dir", required=True)
  parser.add_argument("--model", default="tiny", choices=["tiny", "net"])
  parser.add_argument("--batch-size", type=int, help="default: 256 (tiny), 512 (net)")
  parser.add_argument("--host-devices", type=int, default=1,
                      help="CPU devices (train.py: 2); 1 keeps the trace to one thread pool")
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--top", type=int, default=15)
  parser.add_argument("--formulation", default="auto", choices=("auto", "standard", "cpu"))
  args = parser.parse_args()
  batch_size = args.batch_size or (256 if args.model == "tiny" else 512)
  dump = tempfile.mkdtemp()
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + f" --xla_dump_to={dump}"
                             " --xla_dump_hlo_as_text --xla_dump_hlo_module_re=.*train_batch.*")
  common.use_train_py_settings(batch_size, args.host_devices)
  import jax  # pylint: disable=import-outside-toplevel
  from mnist_jax import Config, Execution  # pylint: disable=import-outside-toplevel

  run = common.build(args.data_dir, Config(model=args.model, batch_size=batch_size),
                     Execution(formulation=args.formulation))
  train_batch = run.fns.train_steps(1)  # train.py's step: epoch.train_batch, jitted
  state, sums, hyperparams = run.state, run.zero_sums(), run.hyperparams(1)
  split, order, augment_key = run.train, run.order(1), run.keys.augment
  for _ in range(3):
    state, sums = train_batch(state, sums, split, order, augment_key, hyperparams)
  jax.block_until_ready(sums)

  trace_dir = tempfile.mkdtemp()
  with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
    start = time.perf_counter()
    for _ in range(args.steps):
      state, sums = train_batch(state, sums, split, order, augment_key, hyperparams)
    jax.block_until_ready(sums)
    wall_ms = 1000 * (time.perf_counter() - start) / args.steps

  with gzip.open(glob.glob(f"{trace_dir}/**/perfetto_trace.json.gz", recursive=True)[0]) as f:
    events = json.load(f)
  events = events["traceEvents"] if isinstance(events, dict) else events
  hlo = "\n".join(open(p).read() for p in glob.glob(f"{dump}/*after_optimizations.txt"))
  layer = {m.group(1): "" for m in re.finditer(r"%([\w.\-]+) = ", hlo)}
  layer.update({m.group(1): m.group(2) for m in re.finditer(
      r"%([\w.\-]+) = .*?op_name=\"jit\(train_batch\)/([^\"]*)\"", hlo)})
  device_us = collections.Counter()
  for event in events:
    # One complete event per operation the XLA:CPU runtime executed ("thunks").
    if event.get("ph") == "X" and "dur" in event and event.get("name") in layer:
      device_us[event["name"]] += event["dur"]
  total_ms = sum(device_us.values()) / 1000 / args.steps
  print(f"{common.cpu_description()}\n{args.model} batch {batch_size} on "
        f"{jax.device_count()} CPU device(s): "
        f"{wall_ms:.1f} ms per step (wall), {total_ms:.1f} ms of operations")
  for name, us in device_us.most_common(args.top):
    ms = us / 1000 / args.steps
    print(f"  {ms:6.1f} ms {100 * ms / total_ms:4.1f}%  {name:32s} {layer[name][:70]}")
  kinds = collections.Counter()
  for name, us in device_us.items():
    kinds["convolution" if "conv" in name and "fusion" not in name else
          "reduce-window" if "reduce-window" in name else
          "dot" if name.startswith("dot") else "other fusions and copies"] += us
  print("  by kind: " + ", ".join(f"{k} {v / 1000 / args.steps:.1f} ms"
                                  for k, v in kinds.most_common()))
  print(f"optimized HLO: {dump}")


if __name__ == "__main__":
  main()
