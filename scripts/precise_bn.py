"""Test accuracy of a TinyNet run's checkpoints with running and with precise BatchNorm
statistics, the latter over clean and over augmented training batches: the measurement
behind `--precise-bn`'s choice of clean images (docs/usage.md "Precise BatchNorm statistics").

    python -m scripts.precise_bn runs/headline-8seeds --data-dir ../shared/data/mnist

Every kept checkpoint, every seed; the precise statistics over the first
`--batches` batches of that epoch's own data order, as the trainer computes them.
"""

import argparse
import json
import os

from mnist_jax import (Config, DataError, Execution, checkpointing, epoch, load_mnist, run,
                       run_axis)


def main():
  parser = argparse.ArgumentParser(  # the docstring's first paragraph, as one line
      description=" ".join(__doc__.split("\n\n")[0].split()))
  parser.add_argument("workdir")
  parser.add_argument("--data-dir", required=True)
  parser.add_argument("--batches", type=int, help="default: the run's precise_bn_batches")
  args = parser.parse_args()
  try:
    with open(os.path.join(args.workdir, "config.json")) as f:
      config = Config.from_dict(json.load(f)).replace(precise_bn=True)
    if args.batches:
      config = config.replace(precise_bn_batches=args.batches)
    mnist = load_mnist(args.data_dir)
  except OSError as e:
    parser.exit(2, f"precise_bn.py: error: {e.filename}: {e.strerror}; give a run folder "
                "train.py wrote\n")
  except (DataError, ValueError) as e:
    parser.exit(2, f"precise_bn.py: error: {e}\n")
  checkpointer = checkpointing.Checkpointer(os.path.join(args.workdir, "checkpoints"))
  try:
    runs = {name: run.build_run(config.replace(precise_bn_augment=augment), Execution(), mnist,
                                checkpointer=checkpointer)
            for name, augment in (("clean", False), ("augmented", True))}
    print(f"{args.workdir}: seeds {run_axis.seed_values(config)}, precise statistics over "
          f"{epoch.precise_bn_batches(config, runs['clean'].num_train)} batches of "
          f"{config.batch_size}")
    print("| epoch | running statistics | precise, clean images | precise, augmented images |")
    print("|---|---|---|---|")
    for saved in checkpointer.epochs():
      state, _ = checkpointer.restore(runs["clean"].state, saved)
      cells = [run_axis.loss_and_accuracy(runs["clean"].evaluate(state))[1]]
      for r in runs.values():  # the statistics the trainer computes after epoch `saved`
        stats = r.precise_batch_stats(state, saved)
        cells.append(run_axis.loss_and_accuracy(r.evaluate(state.replace(batch_stats=stats)))[1])
      print(f"| {saved} | " + " | ".join(
          f"{100 * c.mean():.2f} ({100 * c.min():.2f}-{100 * c.max():.2f})" for c in cells)
            + " |")
  finally:
    checkpointer.close()


if __name__ == "__main__":
  main()
