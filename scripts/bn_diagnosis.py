"""Is a run's test accuracy limited by its BatchNorm running statistics?

    python scripts/bn_diagnosis.py results --data-dir ../shared/data/mnist

Evaluates the latest checkpoint of a TinyNet run three ways: with the running
statistics (what training reports), with statistics recomputed from 10,000 clean
training images, and with the test set's own batch statistics.
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=wrong-import-position
import jax.numpy as jnp  # pylint: disable=wrong-import-position

from mnist_jax import (Config, TinyNet, augment, checkpointing, create_train_state,  # pylint: disable=wrong-import-position
                       input_pipeline, load_mnist)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("workdir")
  parser.add_argument("--data-dir", required=True)
  args = parser.parse_args()
  config = Config(**json.load(open(os.path.join(args.workdir, "config.json"))))
  mnist = load_mnist(args.data_dir)
  steps = input_pipeline.num_batches(len(mnist["train"].labels), config.batch_size)
  template = create_train_state(jax.random.key(0), TinyNet(), config, steps)
  checkpointer = checkpointing.Checkpointer(os.path.join(args.workdir, "checkpoints"))
  state, progress = checkpointer.restore(template)
  checkpointer.close()

  model, labels = TinyNet(), jnp.asarray(mnist["test"].labels)
  test = augment.normalize(jnp.asarray(mnist["test"].images))
  accuracy = lambda logits: float(jnp.mean(jnp.argmax(logits, -1) == labels))
  running = {"params": state.params, "batch_stats": state.batch_stats}
  _, updated = model.apply(running, augment.normalize(jnp.asarray(mnist["train"].images[:10_000])),
                           train=True, mutable=["batch_stats"])
  # One update with momentum 0.9 from the running value: undo it to get the batch's own.
  population = jax.tree.map(lambda old, new: (new - 0.9 * old) / 0.1,
                            state.batch_stats, updated["batch_stats"])
  test_batch_logits, _ = model.apply(running, test, train=True, mutable=["batch_stats"])
  print(f"epoch {progress['history'][-1]['epoch']} of {args.workdir}")
  print(f"  running statistics (reported):   {100 * accuracy(model.apply(running, test)):.2f}%")
  print(f"  statistics of 10k train images:  "
        f"{100 * accuracy(model.apply({**running, 'batch_stats': population}, test)):.2f}%")
  print(f"  test-set batch statistics:       {100 * accuracy(test_batch_logits):.2f}%")
  for layer in population:
    gap = jnp.abs(state.batch_stats[layer]["mean"] - population[layer]["mean"]).max()
    print(f"  {layer}: running mean off by up to {float(gap):.2f}")


if __name__ == "__main__":
  main()
