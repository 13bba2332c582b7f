"""Training and evaluation speed of mnist-jax beside the original PyTorch recipe.

    python benchmarks/benchmark.py --data-dir ../shared/data/mnist

For TinyNet at batch 256 and Net at batch 512 it runs, one after the other on the
same machine, each in a process of its own:
  * mnist-jax as train.py runs it (same XLA:CPU settings, same jitted
    `epoch.train_batch` on the same device mesh), with and without augmentation;
  * the original recipe in PyTorch (benchmarks/original.py: torchvision's MNIST,
    its train transform, DataLoader(num_workers=2), Adam), when torch and
    torchvision are installed (requirements-benchmark.txt).
Each times `--steps` training steps after a warm-up (compile, or the DataLoader's
start-up), and one evaluation of the 10,000 test images. An epoch's training time is
the step time times the epoch's step count (235 at batch 256, 118 at batch 512).
With `--repeats N` each side runs N times, alternating, and the run with the median
epoch is reported. Prints a table and writes JSON (`--out`). `--host-devices 1` and
`--default-convolutions` measure mnist-jax without train.py's CPU settings.
"""

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from mnist_jax import cpu  # pylint: disable=wrong-import-position

CONFIGS = [("tiny", 256), ("net", 512)]


def measure_jax(args) -> dict:
  """In a fresh process: train.py's CPU settings must precede JAX's initialisation."""
  if not args.default_convolutions:
    cpu.use_fast_convolutions()
  cpu.use_host_devices(args.batch_size, args.host_devices)
  import jax  # pylint: disable=import-outside-toplevel
  from mnist_jax import (Config, create_train_state, input_pipeline, load_mnist, models,  # pylint: disable=import-outside-toplevel
                         parallel, epoch)

  mnist = load_mnist(args.data_dir)
  mesh = parallel.make_mesh()
  replicated = parallel.replicated(mesh)
  train = input_pipeline.to_device(mnist["train"], mesh)
  test = input_pipeline.to_device(mnist["test"], mesh)
  n = len(mnist["train"].labels)
  config = Config(model=args.model, batch_size=args.batch_size)
  steps_per_epoch = input_pipeline.num_batches(n, config.batch_size)
  eval_batch_size = epoch.round_up_to_devices(config.eval_batch_size, mesh)
  order = jax.device_put(input_pipeline.shuffled_order(jax.random.key(1), n, config.batch_size),
                         replicated)
  key = jax.device_put(jax.random.key(2), replicated)

  def time_training(augment: bool):
    """(warm-up s, s per step, final state) of `--steps` steps after the first."""
    train_batch = epoch.jit_epoch_functions(
        dataclasses.replace(config, augment=augment), n, eval_batch_size, mesh).train_batch
    state = jax.device_put(create_train_state(
        jax.random.key(0), models.get_model(config.model), config, steps_per_epoch), replicated)
    sums = jax.device_put(epoch.zero_sums(), replicated)
    start = time.perf_counter()
    state, sums = train_batch(state, sums, train, order, key)
    jax.block_until_ready(sums)
    warmup_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(args.steps):
      state, sums = train_batch(state, sums, train, order, key)
    jax.block_until_ready(sums)
    return warmup_s, (time.perf_counter() - start) / args.steps, state

  warmup_s, step_s, state = time_training(augment=True)
  _, step_no_augment_s, _ = time_training(augment=False)
  evaluate = epoch.jit_epoch_functions(config, n, eval_batch_size, mesh).evaluate
  test_order = jax.device_put(
      input_pipeline.sequential_order(len(mnist["test"].labels), eval_batch_size), replicated)
  jax.block_until_ready(evaluate(state, test, test_order))  # compile
  start = time.perf_counter()
  jax.block_until_ready(evaluate(state, test, test_order))
  result = {"devices": f"{jax.device_count()} x {jax.devices()[0].device_kind}",
            "jax": jax.__version__, "warmup_s": warmup_s, "step_ms": 1000 * step_s,
            "train_epoch_s": step_s * steps_per_epoch,
            "images_per_s": config.batch_size / step_s,
            "eval_s": time.perf_counter() - start,
            "train_epoch_no_augment_s": step_no_augment_s * steps_per_epoch,
            "augment_cost_pct": 100 * (step_s / step_no_augment_s - 1)}
  return result


def run(command: list[str]) -> dict | str:
  """The JSON line a measuring process prints, or why there is none."""
  proc = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
  if proc.returncode:
    lines = proc.stderr.strip().splitlines() or ["no output"]
    return lines[-1]
  return json.loads(proc.stdout.strip().splitlines()[-1])


def median_run(runs: list) -> dict | str:
  """The run with the median training epoch (a failure, if any run failed)."""
  failed = [m for m in runs if isinstance(m, str)]
  if failed:
    return failed[0]
  return sorted(runs, key=lambda m: m["train_epoch_s"])[len(runs) // 2]


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--data-dir", required=True)
  parser.add_argument("--steps", type=int, default=40,
                      help="timed TinyNet steps (Net: a quarter, at least 5)")
  parser.add_argument("--out", default="benchmarks/out/benchmark.json")
  parser.add_argument("--host-devices", type=int, default=cpu.HOST_DEVICES,
                      help=f"CPU devices to split each batch over (train.py: {cpu.HOST_DEVICES})")
  parser.add_argument("--default-convolutions", action="store_true",
                      help="XLA's default CPU convolutions (YNNPACK), not train.py's Eigen ones")
  parser.add_argument("--repeats", type=int, default=1,
                      help="measure each side this many times, alternating; report the median")
  parser.add_argument("--skip-original", action="store_true", help="time mnist-jax only")
  parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--model", help=argparse.SUPPRESS)
  parser.add_argument("--batch-size", type=int, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:
    print(json.dumps(measure_jax(args)))
    return

  rows = []
  for model, batch_size in CONFIGS:
    steps = args.steps if model == "tiny" else max(5, args.steps // 4)
    common = ["--data-dir", args.data_dir, "--model", model, "--batch-size", str(batch_size),
              "--steps", str(steps)]
    jax_cmd = [sys.executable, __file__, "--worker", "--host-devices", str(args.host_devices),
               *common] + (["--default-convolutions"] if args.default_convolutions else [])
    measured = {"mnist_jax": [], "original": []}
    for _ in range(args.repeats):  # alternating, so that a slow spell of the machine hits both
      measured["mnist_jax"].append(run(jax_cmd))
      if not args.skip_original:
        measured["original"].append(run([sys.executable, os.path.join(ROOT, "benchmarks",
                                                                      "original.py"), *common]))
    row = {"model": model, "batch_size": batch_size, "steps_timed": steps}
    for side, runs in measured.items():
      if runs:
        row[side] = median_run(runs)
        row[side + "_epoch_s_all_runs"] = [m["train_epoch_s"] for m in runs if isinstance(m, dict)]
    rows.append(row)

  print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{time.strftime('%Y-%m-%d')}")
  print("| model | batch | code | warm-up | train epoch | images/s | eval (10k) "
        "| input pipeline | original / mnist-jax |")
  print("|---|---|---|---|---|---|---|---|---|")
  for r in rows:
    ours, theirs = r["mnist_jax"], r.get("original")
    for name, m in (("mnist-jax", ours), ("original", theirs)):
      if m is None:
        continue
      if isinstance(m, str):
        print(f"| {r['model']} | {r['batch_size']} | {name} | failed: {m} |")
        continue
      if "train_epoch_no_augment_s" in m:
        pipeline = (f"epoch without augmentation {m['train_epoch_no_augment_s']:.1f} s "
                    f"(augmentation {m['augment_cost_pct']:+.1f}%)")
      else:
        pipeline = f"DataLoader alone {m['loader_epoch_s']:.1f} s per epoch"
      ratio = ""
      if name == "mnist-jax" and isinstance(theirs, dict) and isinstance(ours, dict):
        r["speedup"] = theirs["train_epoch_s"] / ours["train_epoch_s"]
        ratio = f"{r['speedup']:.2f}x (eval {theirs['eval_s'] / ours['eval_s']:.1f}x)"
      print(f"| {r['model']} | {r['batch_size']} | {name} | {m['warmup_s']:.1f} s "
            f"| {m['train_epoch_s']:.1f} s | {m['images_per_s']:,.0f} | {m['eval_s']:.2f} s "
            f"| {pipeline} | {ratio} |")
  if args.repeats > 1:
    for r in rows:
      runs = "; ".join(
          f"{side} " + " / ".join(f"{t:.1f}" for t in r[side + "_epoch_s_all_runs"])
          for side in ("mnist_jax", "original") if r.get(side + "_epoch_s_all_runs"))
      print(f"{r['model']} b{r['batch_size']} training epoch in each run (s): {runs}")
  os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
  with open(args.out, "w") as f:
    json.dump({"machine": platform.platform(), "cores": os.cpu_count(),
               "date": time.strftime("%Y-%m-%d"), "rows": rows}, f, indent=2)


if __name__ == "__main__":
  main()
