"""What checkpoint checksums cost: writing them once a save is complete, and verifying them at
a restore, on a run's latest checkpoint, beside that run's own training epoch.

    python train.py --epochs 1 --data-dir ../shared/data/mnist --workdir runs/b512 --no-progress
    python -m benchmarks.checksums runs/b512

Prints the checkpoint's size and files, the median of `--repeats` timings of
`checkpointing.write_checksums` and `checkpointing.checksum_problem` (the files come from the
page cache after the first: a restore reads them just as warm, right after orbax's own read),
and both as a share of the run's first epoch (`epoch_seconds` in its metrics.jsonl).
"""

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time

from benchmarks import common
from mnist_jax import checkpointing


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("workdir", help="a run folder train.py wrote")
  parser.add_argument("--repeats", type=int, default=20)
  args = parser.parse_args()
  with open(os.path.join(args.workdir, "metrics.jsonl")) as f:
    record = json.loads(f.readline())
  latest = max(int(n) for n in os.listdir(os.path.join(args.workdir, "checkpoints")) if n.isdigit())
  folder = os.path.join(tempfile.mkdtemp(), "checkpoint")
  shutil.copytree(os.path.join(args.workdir, "checkpoints", str(latest)), folder)
  files = [os.path.join(r, n) for r, _, names in os.walk(folder) for n in names]
  size = sum(os.path.getsize(f) for f in files)
  timings = {"write": [], "verify": []}
  for _ in range(args.repeats):
    start = time.perf_counter()
    checkpointing.write_checksums(folder)
    timings["write"].append(time.perf_counter() - start)
    start = time.perf_counter()
    assert checkpointing.checksum_problem(folder) is None
    timings["verify"].append(time.perf_counter() - start)
  shutil.rmtree(os.path.dirname(folder))
  epoch = record["epoch_seconds"]
  print(f"{common.cpu_description()}\n{args.workdir}: checkpoint {latest}, {size / 1e3:,.0f} kB in "
        f"{len(files)} files; epoch 1 trained in {epoch:.1f} s")
  for name, seconds in timings.items():
    median = statistics.median(seconds)
    print(f"  {name} checksums: {1e3 * median:.2f} ms (median of {args.repeats}), "
          f"{100 * median / epoch:.3f}% of the epoch")


if __name__ == "__main__":
  main()
