"""A run's metrics as TensorBoard event files, written as it goes (`RUN/tensorboard/`), so that
`tensorboard --logdir RUN` (or a folder of runs) shows the curves during training and
compares runs side by side. Every value is the one metrics.jsonl holds for that epoch (the
step is the epoch), and the folders are TensorBoard's runs:

- `tensorboard/`: the run (with `--seeds N`: the seeds' mean), and the learning rate, the
  images per second and the seconds of each epoch's training;
- `tensorboard/seed_K/`: seed K alone, with `--seeds N`;
- `tensorboard/SETTING/` (and `SETTING/seed_K/`): a sweep's setting, e.g. `learning_rate=0.01`,
  its seeds' mean, with the setting's values as HParams (TensorBoard's HParams tab sets the
  settings side by side with their final metrics).

Tags: `train/loss`, `train/accuracy`, `test/loss`, `test/accuracy` (and `test/loss_precise_bn`,
`test/accuracy_precise_bn` with --precise-bn), `learning_rate`, `images_per_second`,
`epoch_seconds`. A resumed run tells TensorBoard to drop what earlier processes wrote
(`purge_step`) and writes the epochs its checkpoint holds again, so every epoch appears
once, as in metrics.jsonl, even when a process was killed between a checkpoint and its events.

The writer is tensorboardX: TensorBoard's event format on protobuf alone, an 88 kB wheel
(480 KiB installed) whose dependencies are already here, imported in about 0.1 s (`tf.summary`, which the Flax
examples use, would add TensorFlow's import of seconds to every start); `tensorboard` itself
is needed only to look.
"""

import logging
import os
import sys

METRICS = ("train_loss", "train_accuracy", "test_loss", "test_accuracy",
           "test_loss_precise_bn", "test_accuracy_precise_bn")
RUN_WIDE = ("images_per_second", "epoch_seconds")
FOLDER = "tensorboard"


def tag(key: str) -> str:
  """metrics.jsonl's key -> TensorBoard's tag: `test_accuracy` -> `test/accuracy`."""
  return key.replace("_", "/", 1) if key in METRICS else key


def setting_folder(setting: dict) -> str:
  """A sweep setting's run folder: `learning_rate=0.01,bn_momentum=0.3`."""
  return ",".join(f"{k}={v:g}" for k, v in setting.items())


def _summary_writer():
  """tensorboardX's SummaryWriter. Its writer module imports torch when torch is installed
  (1.2 s on 2 cores) only to accept torch tensors, which a JAX run never passes, so torch is
  kept out of that import unless something loaded it already."""
  # It warns of each NaN it writes; a NaN metric is the run's to report (a diverged loss,
  # whose own message says what happened), and TensorBoard shows it as such.
  logging.getLogger("tensorboardX.x2num").setLevel(logging.ERROR)
  if "torch" in sys.modules:
    from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
    return SummaryWriter
  sys.modules["torch"] = None  # `import torch` fails, as if it were not installed
  try:
    from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
  finally:
    del sys.modules["torch"]
  return SummaryWriter


class EventWriter:
  """The event files of the run in `workdir` (process 0 writes them). `history`: the epochs a
  resumed run's checkpoint holds (metrics.jsonl's records), written again over what earlier
  processes wrote; none for a new run."""

  def __init__(self, workdir: str, config, history: list[dict] = ()):
    self._config = config
    self._root = os.path.join(workdir, FOLDER)
    self._resumed = bool(history)
    self._writers = {}
    try:
      self._summary_writer = _summary_writer()
    except ImportError as e:  # a partial install: the run goes on, without its curves
      print(f"note: no TensorBoard event files: {e}; pip install -r requirements.txt",
            file=sys.stderr, flush=True)
      self._summary_writer = None
      return
    if not self._resumed and config.sweep:
      self._write_hparams()  # once, in the run's first process (before any epoch: step 0)
    for record in history:
      self.write(record)

  def _writer(self, folder: str):
    if folder not in self._writers:
      self._writers[folder] = self._summary_writer(
          os.path.join(self._root, folder) if folder else self._root,
          purge_step=1 if self._resumed else None)
    return self._writers[folder]

  def write(self, record: dict) -> None:
    """One epoch's record of metrics.jsonl (`reporting.epoch_record`)."""
    if self._summary_writer is None:
      return
    epoch = record["epoch"]
    root = self._writer("")
    for key in RUN_WIDE:
      root.add_scalar(key, record[key], epoch)
    entries = ([(setting_folder(e["setting"]), e) for e in record["settings"]]
               if "settings" in record else [("", record)])
    for folder, entry in entries:
      writer = self._writer(folder)
      writer.add_scalar("learning_rate", entry["learning_rate"], epoch)
      for key in METRICS:
        if key not in entry:
          continue
        writer.add_scalar(tag(key), entry[key], epoch)
        for seed, value in zip(record.get("seeds", ()), entry.get("per_seed", {}).get(key, ())):
          self._writer(os.path.join(folder, f"seed_{seed}")).add_scalar(tag(key), value, epoch)
    for writer in self._writers.values():
      writer.flush()

  def _write_hparams(self) -> None:
    """Each setting's swept values as HParams, its test metrics as the HParams' metrics."""
    from tensorboardX.summary import hparams  # pylint: disable=import-outside-toplevel
    metrics = {tag(key): 0.0 for key in METRICS
               if key.startswith("test") and (self._config.precise_bn or "precise" not in key)}
    for setting in self._config.settings():
      for summary in hparams(dict(setting), metrics):  # the experiment, its start, its end
        self._writer(setting_folder(setting)).file_writer.add_summary(summary)

  def close(self) -> None:
    for writer in self._writers.values():
      writer.close()
    self._writers = {}
