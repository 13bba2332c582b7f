"""What a run shows and writes: epoch lines, progress bar, curves, summary, JSON files.

Files are written whole to a temporary name and renamed, so an interrupted run
never leaves a half-written file behind.
"""

import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import tqdm


def write_text(path: str, text: str) -> None:
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w") as f:
    f.write(text)
  os.replace(tmp, path)


def write_json(path: str, obj) -> None:
  write_text(path, json.dumps(obj, indent=2) + "\n")


def write_metrics(path: str, history: list[dict]) -> None:
  """`metrics.jsonl`: one JSON object per completed epoch."""
  write_text(path, "".join(json.dumps(record) + "\n" for record in history))


def seed_statistics(metrics: dict[str, np.ndarray], seeds: list[int]) -> dict:
  """A record's metric fields from per-seed values. One seed: the values themselves.
  Many: the mean under the metric's own name (what one run would report), its sample
  standard deviation, min and max as `<name>_std/_min/_max`, the values in `per_seed`."""
  if len(seeds) == 1:
    return {k: float(v[0]) for k, v in metrics.items()}
  record = {}
  for k, v in metrics.items():
    record.update({k: float(np.mean(v)), f"{k}_std": float(np.std(v, ddof=1)),
                   f"{k}_min": float(np.min(v)), f"{k}_max": float(np.max(v))})
  record["seeds"] = list(seeds)
  record["per_seed"] = {k: [float(x) for x in v] for k, v in metrics.items()}
  return record


def _accuracy(record: dict, key: str) -> str:
  text = f"{100 * record[key]:6.2f}%"
  if f"{key}_std" in record:
    text += (f" ± {100 * record[key + '_std']:.2f} "
             f"({100 * record[key + '_min']:.2f}-{100 * record[key + '_max']:.2f})")
  return text


def format_epoch(record: dict) -> str:
  """The console line; with many seeds, accuracies as mean ± std (min-max)."""
  line = (f"epoch {record['epoch']:3d}  "
          f"train loss {record['train_loss']:.4f} acc {_accuracy(record, 'train_accuracy')}  "
          f"test loss {record['test_loss']:.4f} acc {_accuracy(record, 'test_accuracy')}  ")
  if "test_accuracy_precise_bn" in record:
    line += f"precise-BN acc {_accuracy(record, 'test_accuracy_precise_bn')}  "
  return line + (f"lr {record['learning_rate']:.2e}  {record['epoch_seconds']:.1f}s  "
                 f"{record['images_per_second']:,.0f} img/s")


def seconds_since_process_start() -> float | None:
  """How long this process has run (Linux: from /proc; None elsewhere)."""
  try:
    with open("/proc/self/stat") as f:  # field 22: start time, in clock ticks after boot
      started = int(f.read().rsplit(")", 1)[1].split()[19]) / os.sysconf("SC_CLK_TCK")
    with open("/proc/uptime") as f:
      return float(f.read().split()[0]) - started
  except (OSError, ValueError, IndexError):
    return None


def progress_bar(total_steps: int, epoch: int, disable: bool = False) -> tqdm.tqdm:
  return tqdm.tqdm(total=total_steps, desc=f"epoch {epoch}", unit="step",
                   leave=False, dynamic_ncols=True, disable=disable)


def plot_curves(path: str, history: list[dict]) -> None:
  """The original's four panels: train/test loss and accuracy per epoch. With many
  seeds: the mean, a min-max band and a thin line per seed; with precise BatchNorm
  statistics, their test curves beside the running statistics'."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  epochs = [r["epoch"] for r in history]
  panels = [("train_loss", "Training loss"), ("train_accuracy", "Training accuracy (%)"),
            ("test_loss", "Test loss"), ("test_accuracy", "Test accuracy (%)")]
  fig, axes = plt.subplots(2, 2, figsize=(12, 8))
  for ax, (key, title) in zip(axes.flat, panels):
    scale = 100 if key.endswith("accuracy") else 1
    curves = [(key, "running BatchNorm statistics" if key.startswith("test") else None)]
    if f"{key}_precise_bn" in history[0]:
      curves.append((f"{key}_precise_bn", "precise BatchNorm statistics"))
    for (name, label), color in zip(curves, ("C0", "C1")):
      ax.plot(epochs, [scale * r[name] for r in history], marker="o", color=color,
              label=f"{label}, mean" if label and "per_seed" in history[0] else label)
      if "per_seed" in history[0]:
        ax.fill_between(epochs, [scale * r[f"{name}_min"] for r in history],
                        [scale * r[f"{name}_max"] for r in history], color=color, alpha=0.2)
        for values in zip(*(r["per_seed"][name] for r in history)):
          ax.plot(epochs, [scale * v for v in values], color=color, linewidth=0.5, alpha=0.6)
    if len(curves) > 1:
      ax.legend()
    ax.set_title(title + (f", {len(history[0]['seeds'])} seeds (band: min-max)"
                          if "seeds" in history[0] else ""))
    ax.set_xlabel("epoch")
    ax.set_xticks(epochs if len(epochs) <= 20 else epochs[::max(1, len(epochs) // 10)])
    ax.grid(True, alpha=0.3)
  fig.tight_layout()
  tmp = f"{path}.tmp{os.getpid()}.png"
  fig.savefig(tmp, dpi=100)
  plt.close(fig)
  os.replace(tmp, path)


def count_params(params) -> int:
  return sum(x.size for x in jax.tree.leaves(params))


def model_summary(model: nn.Module) -> str:
  """Per-layer output shapes and parameter counts, from `flax.linen.tabulate`."""
  images = jnp.zeros((1, 28, 28, 1), jnp.float32)
  table = nn.tabulate(model, jax.random.key(0), compute_flops=False, depth=1,
                      console_kwargs={"width": 120, "force_terminal": False})(images)
  variables = jax.eval_shape(model.init, jax.random.key(0), images)  # shapes, no numbers
  return (f"{table}\n"
          f"Trainable parameters: {count_params(variables['params']):,}\n"
          f"BatchNorm running statistics (not trained): "
          f"{count_params(variables.get('batch_stats', {})):,}\n")
