"""TensorBoard event files for a run trained before train.py wrote them (results/, say), from
its metrics.jsonl and config.json: the files a run now writes as it goes, the same values
(mnist_jax/tensorboard.py).

    python -m scripts.tensorboard_events results/sweep-lr
    tensorboard --logdir results/sweep-lr

A run folder that has event files already is left as it is.
"""

import argparse
import json
import os
import sys

from mnist_jax import tensorboard
from mnist_jax.config import Config


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
  parser.add_argument("workdir", help="a run folder: its metrics.jsonl and config.json")
  args = parser.parse_args(argv)
  prog = "tensorboard_events.py"
  events = os.path.join(args.workdir, tensorboard.FOLDER)
  if os.path.exists(events):
    print(f"{prog}: error: {events} exists; delete it to write the event files again",
          file=sys.stderr)
    return 2
  try:
    with open(os.path.join(args.workdir, "config.json")) as f:
      config = Config.from_dict(json.load(f))
    with open(os.path.join(args.workdir, "metrics.jsonl")) as f:
      history = [json.loads(line) for line in f]
  except (OSError, ValueError) as e:
    print(f"{prog}: error: {args.workdir}: not a finished run folder ({e}); give a folder "
          "train.py wrote", file=sys.stderr)
    return 2
  writer = tensorboard.EventWriter(args.workdir, config)
  try:
    for record in history:
      writer.write(record)
  finally:
    writer.close()
  print(f"{events}: {len(history)} epochs; tensorboard --logdir {args.workdir}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
