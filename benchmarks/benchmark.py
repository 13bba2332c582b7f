"""Training and evaluation speed of mnist-jax, with and without augmentation.

    python benchmarks/benchmark.py --data-dir ../shared/data/mnist [--steps 40] [--out FILE]

For each configuration (TinyNet batch 256, Net batch 512) it times the trainer's own
jitted step (`trainer.train_batch`: on-device gather, augmentation, forward, backward,
Adam) over `--steps` steps after a warm-up, and the whole-test-set evaluation, then
reports the compile time, seconds per epoch (the measured step time times the
epoch's step count), images/s, and the cost of augmentation. Prints a table, writes JSON.
"""

import argparse
import functools
import json
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mnist_jax import cpu  # pylint: disable=wrong-import-position

# As train.py does, unless asked to measure XLA's default CPU convolutions instead.
if "--default-convolutions" not in sys.argv:
  cpu.use_fast_convolutions()

import jax  # pylint: disable=wrong-import-position,g-import-not-at-top

from mnist_jax import (Config, create_train_state, input_pipeline, load_mnist, models,  # pylint: disable=wrong-import-position,g-import-not-at-top
                       trainer)

CONFIGS = [("tiny", 256), ("net", 512)]


def time_training(config, data, steps: int, augment: bool) -> dict:
  n = len(data.labels)
  steps_per_epoch = input_pipeline.num_batches(n, config.batch_size)
  state = jax.device_put(create_train_state(
      jax.random.key(0), models.get_model(config.model), config, steps_per_epoch))
  order = input_pipeline.shuffled_order(jax.random.key(1), n, config.batch_size)
  step = jax.jit(functools.partial(
      trainer.train_batch, steps_per_epoch=steps_per_epoch, batch_size=config.batch_size,
      augment=augment), donate_argnums=(0, 1))
  sums, key = trainer._zero_sums(), jax.random.key(2)  # pylint: disable=protected-access
  start = time.perf_counter()
  state, sums = step(state, sums, data, order, key)
  jax.block_until_ready(sums)
  first = time.perf_counter() - start
  start = time.perf_counter()
  for _ in range(steps):
    state, sums = step(state, sums, data, order, key)
  jax.block_until_ready(sums)
  per_step = (time.perf_counter() - start) / steps
  return {"compile_and_first_step_s": first, "step_ms": 1000 * per_step,
          "epoch_s": per_step * steps_per_epoch, "images_per_s": config.batch_size / per_step,
          "state": state}


def time_eval(state, test, batch_size=1000) -> float:
  order = input_pipeline.sequential_order(len(test.labels), batch_size)
  evaluate = jax.jit(functools.partial(trainer.evaluate, batch_size=batch_size))
  jax.block_until_ready(evaluate(state, test, order))
  start = time.perf_counter()
  jax.block_until_ready(evaluate(state, test, order))
  return time.perf_counter() - start


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--data-dir", required=True)
  parser.add_argument("--steps", type=int, default=40)
  parser.add_argument("--out", default="benchmarks/out/benchmark.json")
  parser.add_argument("--default-convolutions", action="store_true",
                      help="XLA's default CPU convolutions (YNNPACK), not train.py's Eigen ones")
  args = parser.parse_args()

  mnist = load_mnist(args.data_dir)
  train = input_pipeline.to_device(mnist["train"])
  test = input_pipeline.to_device(mnist["test"])
  rows = []
  for model, batch_size in CONFIGS:
    config = Config(model=model, batch_size=batch_size)
    steps = max(5, args.steps // (4 if model == "net" else 1))
    with_aug = time_training(config, train, steps, augment=True)
    without = time_training(config, train, steps, augment=False)
    rows.append({
        "model": model, "batch_size": batch_size, "steps_timed": steps,
        "compile_and_first_step_s": with_aug["compile_and_first_step_s"],
        "train_epoch_s": with_aug["epoch_s"], "images_per_s": with_aug["images_per_s"],
        "train_epoch_no_augment_s": without["epoch_s"],
        "augment_cost_pct": 100 * (with_aug["epoch_s"] / without["epoch_s"] - 1),
        "eval_s": time_eval(with_aug["state"], test),
    })

  print(f"mnist-jax on {jax.devices()[0].device_kind} ({platform.processor() or platform.machine()},"
        f" {os.cpu_count()} cores), jax {jax.__version__}")
  print("| model | batch | compile+1st step | train epoch | images/s | epoch w/o augment "
        "| augment cost | eval (10k) |")
  print("|---|---|---|---|---|---|---|---|")
  for r in rows:
    print(f"| {r['model']} | {r['batch_size']} | {r['compile_and_first_step_s']:.1f} s "
          f"| {r['train_epoch_s']:.1f} s | {r['images_per_s']:,.0f} "
          f"| {r['train_epoch_no_augment_s']:.1f} s | {r['augment_cost_pct']:+.1f}% "
          f"| {r['eval_s']:.2f} s |")
  os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
  with open(args.out, "w") as f:
    json.dump({"device": str(jax.devices()[0]), "jax": jax.__version__, "rows": rows}, f,
              indent=2)


if __name__ == "__main__":
  main()
