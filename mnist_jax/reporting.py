"""What a run shows and writes: epoch lines, progress bar, curves, summary, JSON files.

Files are written whole to a temporary name and renamed, so an interrupted run
never leaves a half-written file behind.
"""

import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
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


def format_epoch(record: dict) -> str:
  return (f"epoch {record['epoch']:3d}  "
          f"train loss {record['train_loss']:.4f} acc {100 * record['train_accuracy']:6.2f}%  "
          f"test loss {record['test_loss']:.4f} acc {100 * record['test_accuracy']:6.2f}%  "
          f"lr {record['learning_rate']:.2e}  {record['epoch_seconds']:.1f}s  "
          f"{record['images_per_second']:,.0f} img/s")


def progress_bar(total_steps: int, epoch: int, disable: bool = False) -> tqdm.tqdm:
  return tqdm.tqdm(total=total_steps, desc=f"epoch {epoch}", unit="step",
                   leave=False, dynamic_ncols=True, disable=disable)


def plot_curves(path: str, history: list[dict]) -> None:
  """The original's four panels: train/test loss and accuracy per epoch."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  epochs = [r["epoch"] for r in history]
  panels = [("train_loss", "Training loss"), ("train_accuracy", "Training accuracy (%)"),
            ("test_loss", "Test loss"), ("test_accuracy", "Test accuracy (%)")]
  fig, axes = plt.subplots(2, 2, figsize=(12, 8))
  for ax, (key, title) in zip(axes.flat, panels):
    scale = 100 if key.endswith("accuracy") else 1
    ax.plot(epochs, [scale * r[key] for r in history], marker="o")
    ax.set_title(title)
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


def model_summary(model: nn.Module, variables) -> str:
  """Per-layer output shapes and parameter counts, from `flax.linen.tabulate`."""
  table = nn.tabulate(
      model, jax.random.key(0), compute_flops=False, depth=1,
      console_kwargs={"width": 120, "force_terminal": False})(
          jnp.zeros((1, 28, 28, 1), jnp.float32))
  return (f"{table}\n"
          f"Trainable parameters: {count_params(variables['params']):,}\n"
          f"BatchNorm running statistics (not trained): "
          f"{count_params(variables.get('batch_stats', {})):,}\n")
