"""The run configuration: one typed, JSON-serialisable record. Presets live in configs/."""

import dataclasses
import math

MODELS = ("tiny", "net")
SEED_MAPS = ("vmap", "unroll")  # see mnist_jax/epoch.py


@dataclasses.dataclass(frozen=True)
class Config:
  model: str = "tiny"  # "tiny" (TinyNet, 22,334 params) or "net" (Net, 593,200 params)
  batch_size: int = 512  # the original's default; the last partial batch is kept
  num_epochs: int = 20
  learning_rate: float = 1e-3  # Adam
  step_size: int = 15  # StepLR: multiply the rate by gamma every step_size epochs
  gamma: float = 0.1
  seed: int = 0  # parameters, data order and augmentation all derive from it
  num_seeds: int = 1  # independent runs trained together: seeds seed, seed+1, ...
  seed_map: str | None = None  # how seeds are computed (speed only); None: per backend
  steps_per_chunk: int | None = None  # training steps per device program; None: per backend
  precise_bn: bool = False  # also evaluate with BatchNorm statistics recomputed per epoch
  precise_bn_batches: int = 40  # training batches they are recomputed over
  precise_bn_augment: bool = False  # those batches with the train transform (else clean)
  augment: bool = True  # the original's random crop+resize and rotation
  data_dir: str | None = None  # four IDX files; None: tensorflow-datasets
  mnist_url: str | None = None  # where TFDS downloads the .gz files (a mirror, file://); None: TFDS's
  num_train_examples: int | None = None  # the first N training images (quick runs); None: all
  eval_batch_size: int = 1000
  progress_every_steps: int = 20  # progress-bar refresh; each refresh waits for the device
  keep_checkpoints: int = 3

  def __post_init__(self):
    problems = self.problems()
    if problems:
      raise ValueError("; ".join(problems))

  def problems(self) -> list[str]:
    """What is wrong with these values, as `--flag: reason` lines."""
    found = []
    if self.model not in MODELS:
      found.append(f"--model: unknown model {self.model!r}; choose one of {', '.join(MODELS)}")
    for name, flag in (("batch_size", "--batch-size"), ("num_epochs", "--epochs"),
                       ("num_seeds", "--seeds"), ("precise_bn_batches", "precise_bn_batches"),
                       ("steps_per_chunk", "--steps-per-chunk"),
                       ("step_size", "--step-size"), ("eval_batch_size", "eval_batch_size"),
                       ("progress_every_steps", "progress_every_steps"),
                       ("keep_checkpoints", "keep_checkpoints")):
      if getattr(self, name) is not None and getattr(self, name) < 1:
        found.append(f"{flag}: must be a positive integer, got {getattr(self, name)}")
    if self.num_train_examples is not None and self.num_train_examples < 1:
      found.append(f"--train-examples: must be positive, got {self.num_train_examples}")
    if self.seed_map is not None and self.seed_map not in SEED_MAPS:
      found.append(f"seed_map: unknown {self.seed_map!r}; choose one of {', '.join(SEED_MAPS)}")
    if self.precise_bn and self.model == "net":
      found.append("--precise-bn: Net has no BatchNorm; use it with --model tiny")
    if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
      found.append(f"--lr: must be a positive finite number, got {self.learning_rate}")
    if not (0 < self.gamma <= 1):
      found.append(f"--gamma: must lie in (0, 1], got {self.gamma}")
    return found

  def replace(self, **changes) -> "Config":
    return dataclasses.replace(self, **changes)

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)
