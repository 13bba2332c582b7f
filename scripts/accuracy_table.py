"""Per-epoch test accuracy of several runs as a Markdown table (the README's Results).

    python scripts/accuracy_table.py results runs/headline-seed1 runs/headline-seed2
"""

import json
import sys


def main(workdirs: list[str]) -> None:
  runs = []
  for workdir in workdirs:
    with open(f"{workdir}/metrics.jsonl") as f:
      runs.append([json.loads(line) for line in f])
  seeds = [json.load(open(f"{w}/config.json"))["seed"] for w in workdirs]
  print("| epoch | " + " | ".join(f"seed {s}" for s in seeds) + " | mean |")
  print("|---" * (len(runs) + 2) + "|")
  for epoch in range(max(len(r) for r in runs)):
    accs = [100 * r[epoch]["test_accuracy"] for r in runs if epoch < len(r)]
    print(f"| {epoch + 1} | " + " | ".join(f"{a:.2f}%" for a in accs)
          + f" | {sum(accs) / len(accs):.2f}% |")


if __name__ == "__main__":
  main(sys.argv[1:])
