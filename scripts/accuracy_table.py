"""Per-epoch test accuracy over seeds as a Markdown table (docs/results.md), with the
original's full runs beside it and a two-sided Mann-Whitney p-value for the difference.

    python -m scripts.accuracy_table runs/headline-8seeds \
        --original benchmarks/out/original-headline.json

RUN_DIR: one or more mnist-jax runs (a `--seeds N` run counts N times); --original: the
JSON of `benchmarks/original.py --full-run`.
"""

import argparse
import itertools
import json
import math
import os

import numpy as np


def mnist_jax_accuracies(workdirs: list[str], key: str) -> dict[int, list[float]]:
  """epoch -> test accuracy (%) of every seed of every run."""
  per_epoch: dict[int, list[float]] = {}
  for workdir in workdirs:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
      for record in map(json.loads, f):
        if "settings" in record:
          raise SystemExit(f"accuracy_table.py: error: {workdir} is a sweep; its table is "
                           "the end of train.py's output, its numbers are in sweep.csv")
        if key in record:
          values = record["per_seed"][key] if "per_seed" in record else [record[key]]
          per_epoch.setdefault(record["epoch"], []).extend(100 * v for v in values)
  return per_epoch


def original_accuracies(path: str) -> dict[int, list[float]]:
  with open(path) as f:
    runs = json.load(f)["runs"]
  per_epoch: dict[int, list[float]] = {}
  for run in runs:
    for record in run["history"]:
      per_epoch.setdefault(record["epoch"], []).append(100 * record["test_accuracy"])
  return per_epoch


def mann_whitney_p(a, b) -> float:
  """Two-sided p-value of the Mann-Whitney U test (mid-ranks for ties): exact, by
  enumerating every split of the pooled values, up to 200,000 splits; beyond that the
  normal approximation with the tie correction."""
  pooled = np.concatenate([a, b]).astype(np.float64)
  n, m = len(pooled), len(a)
  order = np.argsort(pooled, kind="stable")
  ranks = np.empty(n)
  ranks[order] = np.arange(1, n + 1)
  for value in np.unique(pooled):  # mid-ranks
    ranks[pooled == value] = ranks[pooled == value].mean()
  expected = m * (n + 1) / 2
  observed = abs(ranks[:m].sum() - expected)
  if math.comb(n, m) <= 200_000:
    sums = ranks[np.array(list(itertools.combinations(range(n), m)))].sum(axis=1)
    return float(np.mean(np.abs(sums - expected) >= observed - 1e-9))
  ties = sum(c ** 3 - c for c in np.unique(pooled, return_counts=True)[1])
  variance = m * (n - m) / 12 * ((n + 1) - ties / (n * (n - 1)))
  return math.erfc(observed / math.sqrt(2 * variance)) if variance else 1.0


def describe(values) -> str:
  v = np.asarray(values)
  spread = f" ± {v.std(ddof=1):.2f}" if len(v) > 1 else ""
  return f"{v.mean():.2f}{spread} ({v.min():.2f}-{v.max():.2f}), n={len(v)}"


def main():
  parser = argparse.ArgumentParser(  # the docstring's first paragraph, as one line
      description=" ".join(__doc__.split("\n\n")[0].split()))
  parser.add_argument("workdirs", nargs="+", metavar="RUN_DIR")
  parser.add_argument("--original", help="JSON of benchmarks/original.py --full-run")
  args = parser.parse_args()
  try:
    ours = mnist_jax_accuracies(args.workdirs, "test_accuracy")
    precise = mnist_jax_accuracies(args.workdirs, "test_accuracy_precise_bn")
    theirs = original_accuracies(args.original) if args.original else {}
  except OSError as e:
    parser.exit(2, f"accuracy_table.py: error: {e.filename}: {e.strerror}; give a run folder "
                "train.py wrote (and --original a file benchmarks/original.py --full-run wrote)\n")
  except (ValueError, KeyError, TypeError) as e:
    parser.exit(2, f"accuracy_table.py: error: a file is not what train.py or original.py "
                f"writes ({type(e).__name__}: {e})\n")
  header = ["epoch", "mnist-jax test accuracy % (mean ± std (min-max))"]
  if precise:
    header.append("mnist-jax, precise BatchNorm statistics")
  if theirs:
    header += ["original", "Mann-Whitney p (mnist-jax vs original)"]
  print("| " + " | ".join(header) + " |")
  print("|---" * len(header) + "|")
  for epoch in sorted(set(ours) | set(theirs)):
    row = [str(epoch), describe(ours[epoch]) if epoch in ours else ""]
    if precise:
      row.append(describe(precise[epoch]) if epoch in precise else "")
    if theirs:
      row.append(describe(theirs[epoch]) if epoch in theirs else "")
      both = epoch in ours and epoch in theirs
      row.append(f"{mann_whitney_p(ours[epoch], theirs[epoch]):.2f}" if both else "")
    print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
  main()
