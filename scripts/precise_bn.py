"""Test accuracy of a TinyNet run's checkpoints with running and with precise BatchNorm
statistics, the latter over clean and over augmented training batches: the measurement
behind `--precise-bn`'s choice of clean images (docs/usage.md "Precise BatchNorm statistics").

    python scripts/precise_bn.py runs/headline-8seeds --data-dir ../shared/data/mnist

Every kept checkpoint, every seed; the precise statistics over the first
`--batches` batches of that epoch's own data order, as the trainer computes them.
"""

import argparse
import dataclasses
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position

from mnist_jax import (Config, checkpointing, epoch, input_pipeline, load_mnist,  # pylint: disable=wrong-import-position
                       parallel)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("workdir")
  parser.add_argument("--data-dir", required=True)
  parser.add_argument("--batches", type=int, help="default: the run's precise_bn_batches")
  args = parser.parse_args()
  with open(os.path.join(args.workdir, "config.json")) as f:
    config = Config(**json.load(f)).replace(data_dir=args.data_dir, precise_bn=True)
  if args.batches:
    config = config.replace(precise_bn_batches=args.batches)
  mnist = load_mnist(args.data_dir)
  train_split = input_pipeline.subset(mnist["train"], config.num_train_examples)
  num_train = len(train_split.labels)
  mesh = parallel.make_mesh()
  keys = epoch.run_keys(config)
  template = epoch.abstract_state(config, parallel.replicated(mesh))
  test_split = input_pipeline.subset(mnist["test"], config.num_test_examples)
  train, test = (input_pipeline.to_device(s, mesh) for s in (train_split, test_split))
  test_order = input_pipeline.sequential_order(len(test_split.labels), 1000)
  variants = {name: epoch.jit_epoch_functions(
      dataclasses.replace(config, precise_bn_augment=augment), num_train, 1000, mesh)
              for name, augment in (("clean", False), ("augmented", True))}
  checkpointer = checkpointing.Checkpointer(os.path.join(args.workdir, "checkpoints"))
  print(f"{args.workdir}: seeds {epoch.seed_values(config)}, precise statistics over "
        f"{epoch.precise_bn_batches(config, num_train)} batches of {config.batch_size}")
  print("| epoch | running statistics | precise, clean images | precise, augmented images |")
  print("|---|---|---|---|")
  try:
    for saved in checkpointer.epochs():
      state, _ = checkpointer.restore(template, saved)
      order = variants["clean"].order(keys.data, np.int32(saved))
      cells = [epoch.per_run(variants["clean"].evaluate(state, test, test_order))[1]]
      for fns in variants.values():
        stats = fns.precise_batch_stats(state, train, order, keys.augment)
        cells.append(epoch.per_run(fns.evaluate(state.replace(batch_stats=stats), test,
                                                 test_order))[1])
      print(f"| {saved} | " + " | ".join(
          f"{100 * c.mean():.2f} ({100 * c.min():.2f}-{100 * c.max():.2f})" for c in cells)
            + " |")
  finally:
    checkpointer.close()


if __name__ == "__main__":
  main()
