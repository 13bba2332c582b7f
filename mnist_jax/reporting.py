"""What a run shows and writes: epoch lines, progress bar, curves, summary, JSON files.

Files are written whole to a temporary name and renamed, so an interrupted run
never leaves a half-written file behind.
"""

import json
import os
import threading
import time

import flax.linen as nn
import jax
import numpy as np
import tqdm

from mnist_jax.phases import seconds_since_process_start
from mnist_jax.run_axis import seed_values


def write_text(path: str, text: str) -> None:
  """`text` into `path` whole, or not at all: an OSError (a full disk) names `path` and leaves
  whatever was there before."""
  tmp = f"{path}.tmp{os.getpid()}"
  try:
    with open(tmp, "w") as f:
      f.write(text)
    os.replace(tmp, path)
  except OSError as e:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise OSError(e.errno, e.strerror, path) from e


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


def setting_name(setting: dict) -> str:
  """`learning_rate=0.01 bn_momentum=0.3`: a sweep's setting as people read it."""
  return " ".join(f"{k}={v:g}" for k, v in setting.items())


def run_names(config) -> list[str]:
  """Each run of the run axis by its seed and, in a sweep, its setting."""
  return [f"{setting_name(setting) + ', ' if setting else ''}seed {seed}"
          for setting in config.settings() for seed in seed_values(config)]


def sweep_entries(config, per_setting: list[dict]) -> dict:
  """A sweep record's part for its settings: each setting's values and its seeds' statistics
  (`seed_statistics`: mean ± std, min, max, per seed) under `settings`."""
  return {"seeds": seed_values(config),
          "settings": [{"setting": setting, **entry}
                       for setting, entry in zip(config.settings(), per_setting)]}


def epoch_record(config, epoch: int, metrics: dict[str, np.ndarray], learning_rates: list[float],
                 seconds: dict) -> dict:
  """An epoch's line of metrics.jsonl from per-run metrics (`run_axis.loss_and_accuracy`), each
  run's learning rate in that epoch and the epoch's `EpochTimer.seconds`."""
  n = config.num_seeds
  per_setting = [{
      **seed_statistics({k: v[i * n:(i + 1) * n] for k, v in metrics.items()}, seed_values(config)),
      "learning_rate": learning_rates[i * n],
  } for i in range(len(config.settings()))]
  return {"epoch": epoch,
          **(sweep_entries(config, per_setting) if config.sweep else per_setting[0]),
          **seconds}


class EpochTimer:
  """Where an epoch's time goes: training (up to its metrics on the host), evaluation
  (precise BatchNorm statistics apart), and in this process's first epoch the warm-up, from
  the epoch's start to its first step done: compiling the step or loading it from the cache."""

  def __init__(self, first_epoch: int):
    self._first_epoch = first_epoch

  def start(self, epoch: int) -> None:
    self._epoch, self._start, self._first_step = epoch, time.perf_counter(), None
    self._trained = self._evaluated = None

  def step_done(self, bar, steps_done: int) -> None:
    """`epoch.train_epoch`'s report: the progress bar, and the first step's time."""
    if self._first_step is None:
      self._first_step = (time.perf_counter(), seconds_since_process_start())
    bar.update(steps_done - bar.n)

  def trained(self) -> None:
    self._trained = time.perf_counter()

  def evaluated(self) -> None:
    """The test pass is done; what follows is precise BatchNorm's."""
    self._evaluated = time.perf_counter()

  def seconds(self, num_images: int) -> dict:
    now = time.perf_counter()
    train_seconds = self._trained - self._start
    record = {"epoch_seconds": train_seconds, "eval_seconds": now - self._trained,
              "images_per_second": num_images / train_seconds}
    if self._evaluated is not None:
      record["precise_bn_seconds"] = now - self._evaluated
    if self._epoch == self._first_epoch:
      record["warmup_seconds"] = self._first_step[0] - self._start
      if self._first_step[1] is not None:
        record["process_start_to_first_step_seconds"] = self._first_step[1]
    return record


def accuracy_key(record: dict) -> str:
  """The test accuracy a finished run answers with: precise BatchNorm statistics' if it
  has them (`inference.load_run` uses them), else the running statistics'."""
  entry = record["settings"][0] if "settings" in record else record
  return "test_accuracy_precise_bn" if "test_accuracy_precise_bn" in entry else "test_accuracy"


def ranked_settings(record: dict) -> list[int]:
  """A sweep record's settings, best mean test accuracy (`accuracy_key`) first."""
  key = accuracy_key(record)
  return sorted(range(len(record["settings"])), key=lambda i: -record["settings"][i][key])


def _accuracy(record: dict, key: str) -> str:
  text = f"{100 * record[key]:6.2f}%"
  if f"{key}_std" in record:
    text += (f" ± {100 * record[key + '_std']:.2f} "
             f"({100 * record[key + '_min']:.2f}-{100 * record[key + '_max']:.2f})")
  return text


def format_epoch(record: dict) -> str:
  """The console line; with many seeds, accuracies as mean ± std (min-max); in a sweep, the
  best setting's so far."""
  if "settings" in record:
    best = record["settings"][ranked_settings(record)[0]]
    return format_epoch({**{k: v for k, v in record.items() if k != "settings"}, **best}).replace(
        "  train loss", f"  best of {len(record['settings'])}: {setting_name(best['setting'])}"
        "  train loss", 1)
  line = (f"epoch {record['epoch']:3d}  "
          f"train loss {record['train_loss']:.4f} acc {_accuracy(record, 'train_accuracy')}  "
          f"test loss {record['test_loss']:.4f} acc {_accuracy(record, 'test_accuracy')}  ")
  if "test_accuracy_precise_bn" in record:
    line += f"precise-BN acc {_accuracy(record, 'test_accuracy_precise_bn')}  "
  return line + (f"lr {record['learning_rate']:.2e}  {record['epoch_seconds']:.1f}s  "
                 f"{record['images_per_second']:,.0f} img/s")


def progress_bar(total_steps: int, epoch: int, disable: bool = False) -> tqdm.tqdm:
  return tqdm.tqdm(total=total_steps, desc=f"epoch {epoch}", unit="step",
                   leave=False, dynamic_ncols=True, disable=disable)


def start_importing_matplotlib() -> None:
  """Imports matplotlib in a background thread, so that the plots after the last epoch do not
  wait for it (about 0.5 s on 2 cores): a run calls this as its last evaluation starts,
  while the host waits for the device. (Earlier, it would compete with tracing and
  compiling for the interpreter: 0.5 s later to the first step.)"""
  threading.Thread(target=_matplotlib_pyplot, name="import matplotlib", daemon=True).start()


def _matplotlib_pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def plot_curves(path: str, history: list[dict]) -> None:
  """`curves_figure` saved as a PNG at `path`."""
  _save(curves_figure(history), path)


def curves_figure(history: list[dict]):
  """The original's four panels: train/test loss and accuracy per epoch. With many
  seeds: the mean, a min-max band and a thin line per seed; with precise BatchNorm
  statistics, their test curves beside the running statistics'. A sweep: each setting's
  mean and band, in a colour of its own (precise statistics dashed)."""
  plt = _matplotlib_pyplot()
  epochs = [r["epoch"] for r in history]
  if "settings" in history[0]:
    series = [(setting_name(entry["setting"]), [r["settings"][i] for r in history])
              for i, entry in enumerate(history[0]["settings"])]
  else:
    series = [(None, history)]
  many_seeds = "per_seed" in series[0][1][0]
  panels = [("train_loss", "Training loss"), ("train_accuracy", "Training accuracy (%)"),
            ("test_loss", "Test loss"), ("test_accuracy", "Test accuracy (%)")]
  # Constrained layout keeps every title, label and legend inside the figure.
  fig, axes = plt.subplots(2, 2, figsize=(12, 8), layout="constrained")
  for ax, (key, title) in zip(axes.flat, panels):
    scale = 100 if key.endswith("accuracy") else 1
    for s, (setting, entries) in enumerate(series):
      curves = [(key, "running BatchNorm statistics" if key.startswith("test") else None)]
      if f"{key}_precise_bn" in entries[0]:
        curves.append((f"{key}_precise_bn", "precise BatchNorm statistics"))
      for c, (name, statistics) in enumerate(curves):
        color, linestyle = (f"C{s}", ("-", "--")[c]) if setting else (f"C{c}", "-")
        label = setting if setting and c == 0 else statistics if not setting else None
        if statistics and not setting and many_seeds:
          label += ", mean"
        ax.plot(epochs, [scale * e[name] for e in entries], marker="o", color=color,
                linestyle=linestyle, label=label)
        if many_seeds:
          ax.fill_between(epochs, [scale * e[f"{name}_min"] for e in entries],
                          [scale * e[f"{name}_max"] for e in entries], color=color, alpha=0.2)
        if not setting and "per_seed" in entries[0]:
          for values in zip(*(e["per_seed"][name] for e in entries)):
            ax.plot(epochs, [scale * v for v in values], color=color, linewidth=0.5, alpha=0.6)
    if len(series) > 1 or len(curves) > 1:
      ax.legend(fontsize="small")
    details = ", ".join(filter(None, [
        f"{len(history[0]['seeds'])} seeds (band: min-max)" if many_seeds else "",
        "dashed: precise BN statistics" if len(series) > 1 and len(curves) > 1 else ""]))
    ax.set_title(title + (f"\n{details}" if details else ""))  # two lines: a panel's width
    ax.set_xlabel("epoch")
    ax.set_xticks(epochs if len(epochs) <= 20 else epochs[::max(1, len(epochs) // 10)])
    ax.grid(True, alpha=0.3)
  return fig


def _save(fig, path: str) -> None:
  plt = _matplotlib_pyplot()
  tmp = f"{path}.tmp{os.getpid()}.png"
  try:
    fig.savefig(tmp, dpi=100)
    os.replace(tmp, path)
  except OSError as e:  # as write_text
    if os.path.exists(tmp):
      os.remove(tmp)
    raise OSError(e.errno, e.strerror, path) from e
  finally:
    plt.close(fig)


def count_params(params) -> int:
  return sum(x.size for x in jax.tree.leaves(params))


def model_summary(model: nn.Module) -> str:
  """Per-layer output shapes and parameter counts, from `flax.linen.tabulate`."""
  # Host arrays, shapes only: tabulate traces the model abstractly, so nothing is compiled
  # (a key made on the device would be a program of its own). The key is PRNGKey(0)'s data.
  images, key = np.zeros((1, 28, 28, 1), np.float32), np.zeros(2, np.uint32)
  table = nn.tabulate(model, key, compute_flops=False, depth=1,
                      console_kwargs={"width": 120, "force_terminal": False})(images)
  variables = jax.eval_shape(model.init, key, images)  # shapes, no numbers
  return (f"{table}\n"
          f"Trainable parameters: {count_params(variables['params']):,}\n"
          f"BatchNorm running statistics (not trained): "
          f"{count_params(variables.get('batch_stats', {})):,}\n")


def _metric_names(entry: dict) -> list[str]:
  return [k for k in ("train_loss", "train_accuracy", "test_loss", "test_accuracy",
                      "test_loss_precise_bn", "test_accuracy_precise_bn") if k in entry]


def write_sweep_csv(path: str, config, history: list[dict]) -> None:
  """`sweep.csv`: one row per setting and epoch: the swept values, the rate in that epoch,
  each metric's mean (and with many seeds its std, min and max) over the setting's seeds."""
  names = [name for name, _ in config.sweep]
  metrics = _metric_names(history[0]["settings"][0])
  stats = ("", "_std", "_min", "_max") if config.num_seeds > 1 else ("",)
  header = ["epoch", "setting", *names, "learning_rate_now",
            *(m + stat for m in metrics for stat in stats)]
  rows = [[record["epoch"], i, *(entry["setting"][n] for n in names), entry["learning_rate"],
           *(entry[m + stat] for m in metrics for stat in stats)]
          for record in history for i, entry in enumerate(record["settings"])]
  write_text(path, "".join(",".join(map(str, row)) + "\n" for row in [header, *rows]))


def sweep_table(config, history: list[dict]) -> str:
  """The final epoch's settings as a Markdown table, best first (`ranked_settings`)."""
  record = history[-1]
  names = [name for name, _ in config.sweep]
  metrics = [m for m in _metric_names(record["settings"][0]) if m.startswith("test_accuracy")]
  titles = {"test_accuracy": "test accuracy (running BN statistics)",
            "test_accuracy_precise_bn": "test accuracy (precise BN statistics)"}
  spread = " ± std (min-max)" if config.num_seeds > 1 else ""
  lines = [f"Sweep after epoch {record['epoch']}: {len(record['settings'])} settings x "
           f"{config.num_seeds} seed(s) ({', '.join(map(str, record['seeds']))}), best first",
           "",
           "| setting | " + " | ".join(names) + " | train loss | "
           + " | ".join(titles[m] + spread for m in metrics) + " |",
           "| ---: | " + " | ".join("---:" for _ in [*names, "loss", *metrics]) + " |"]
  for i in ranked_settings(record):
    entry = record["settings"][i]
    lines.append(f"| {i} | " + " | ".join(f"{entry['setting'][n]:g}" for n in names)
                 + f" | {entry['train_loss']:.4f} | "
                 + " | ".join(_accuracy(entry, m).strip() for m in metrics) + " |")
  return "\n".join(lines)


def plot_sweep(path: str, config, history: list[dict]) -> None:
  """`sweep_figure` saved as a PNG at `path`."""
  _save(sweep_figure(config, history), path)


def sweep_figure(config, history: list[dict]):
  """Final test accuracy against each swept value that varies: a point per setting at its
  seeds' mean, a bar over their min-max; settings that share the other swept values joined
  by a line; with precise BatchNorm statistics, those beside the running statistics'.
  Legends go below their panel, clear of the data; a field given one value gets no panel of
  its own (the title names it)."""
  plt = _matplotlib_pyplot()
  entries = history[-1]["settings"]
  metrics = [m for m in _metric_names(entries[0]) if m.startswith("test_accuracy")]
  names = [name for name, values in config.sweep if len(values) > 1] or [config.sweep[0][0]]
  fixed = {name: values[0] for name, values in config.sweep if name not in names}
  fig, axes = plt.subplots(1, len(names), figsize=(6 * len(names), 6.5), squeeze=False,
                           layout="constrained")
  for ax, name in zip(axes.flat, names):
    others = [n for n in names if n != name]
    groups: dict[tuple, list[dict]] = {}
    for entry in entries:
      groups.setdefault(tuple(entry["setting"][n] for n in others), []).append(entry)
    for g, (key, group) in enumerate(groups.items()):
      key = tuple(v for n, v in zip(others, key) if n not in fixed)
      shown_others = [n for n in others if n not in fixed]
      for m, linestyle, marker in zip(metrics, ("-", "--"), ("o", "s")):
        x = [e["setting"][name] for e in group]
        y = [100 * e[m] for e in group]
        statistics = ("precise BN statistics" if m.endswith("precise_bn") else
                      "running BN statistics" if len(metrics) > 1 else "")
        label = ", ".join(filter(None, [setting_name(dict(zip(shown_others, key))), statistics]))
        ax.plot(x, y, linestyle=linestyle, marker=marker, color=f"C{g}", label=label or None)
        if config.num_seeds > 1:
          ax.vlines(x, [100 * e[m + "_min"] for e in group], [100 * e[m + "_max"] for e in group],
                    color=f"C{g}", alpha=0.5)
    values = dict(config.sweep)[name]
    if min(values) > 0 and max(values) / min(values) >= 10:
      ax.set_xscale("log")
    ax.set_xlabel(name)
    ax.set_ylabel(f"test accuracy after epoch {history[-1]['epoch']} (%)")
    ax.set_title(f"{config.num_seeds} seed(s) per point" + (" (bar: min-max)"
                                                            if config.num_seeds > 1 else "")
                 + (f"\n{setting_name(fixed)} throughout" if fixed else ""))
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.15))
  return fig
