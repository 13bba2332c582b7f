"""The run configuration: one typed, JSON-serialisable record. Presets live in configs/."""

import copy
import dataclasses
import itertools
import math

MODELS = ("tiny", "net")
SEED_MAPS = ("vmap", "unroll")  # see mnist_jax/epoch.py
# Fields a sweep may vary: they change numbers, not the program's shapes or structure, so
# the runs of a grid are entries of one run axis (steps.train_step's `hyperparams`).
SWEEPABLE = ("learning_rate", "step_size", "gamma", "bn_momentum")


@dataclasses.dataclass(frozen=True)
class Config:
  model: str = "tiny"  # "tiny" (TinyNet, 22,334 params) or "net" (Net, 593,200 params)
  batch_size: int = 512  # the original's default; the last partial batch is kept
  num_epochs: int = 20
  learning_rate: float = 1e-3  # Adam
  step_size: int = 15  # StepLR: multiply the rate by gamma every step_size epochs
  gamma: float = 0.1
  bn_momentum: float = 0.1  # BatchNorm running averages: PyTorch's momentum (the new batch's weight)
  seed: int = 0  # parameters, data order and augmentation all derive from it
  num_seeds: int = 1  # independent runs trained together: seeds seed, seed+1, ...
  # A grid trained as one run axis: (field, values) pairs of SWEEPABLE fields; every
  # setting (the product of their values) runs with each of the num_seeds seeds.
  sweep: tuple[tuple[str, tuple[float, ...]], ...] = ()
  seed_map: str | None = None  # how seeds are computed (speed only); None: per backend
  run_groups: int = 1  # device groups the run axis is split over (a runs x data mesh)
  steps_per_chunk: int | None = None  # training steps per device program; None: per backend
  precise_bn: bool = False  # also evaluate with BatchNorm statistics recomputed per epoch
  precise_bn_batches: int = 40  # training batches they are recomputed over
  precise_bn_augment: bool = False  # those batches with the train transform (else clean)
  augment: bool = True  # the original's random crop+resize and rotation
  data_dir: str | None = None  # four IDX files; None: tensorflow-datasets
  mnist_url: str | None = None  # where TFDS downloads the .gz files (a mirror, file://); None: TFDS's
  num_train_examples: int | None = None  # the first N training images (quick runs); None: all
  num_test_examples: int | None = None  # the first N test images (quick runs); None: all
  eval_batch_size: int = 1000
  progress_every_steps: int = 20  # progress-bar refresh; each refresh waits for the device
  keep_checkpoints: int = 3

  def __post_init__(self):
    # As tuples (hashable: a config is a static argument of jit), from JSON's lists too.
    object.__setattr__(self, "sweep", tuple((name, tuple(values)) for name, values in self.sweep))
    problems = self.problems()
    if problems:
      raise ValueError("; ".join(problems))

  def problems(self) -> list[str]:
    """What is wrong with these values, as `--flag: reason` lines."""
    found = self._field_problems()
    return found + self._sweep_problems(found)

  def _field_problems(self) -> list[str]:
    found = []
    if self.model not in MODELS:
      found.append(f"--model: unknown model {self.model!r}; choose one of {', '.join(MODELS)}")
    for name, flag in (("batch_size", "--batch-size"), ("num_epochs", "--epochs"),
                       ("num_seeds", "--seeds"), ("precise_bn_batches", "precise_bn_batches"),
                       ("steps_per_chunk", "--steps-per-chunk"),
                       ("step_size", "--step-size"), ("eval_batch_size", "eval_batch_size"),
                       ("progress_every_steps", "progress_every_steps"),
                       ("keep_checkpoints", "keep_checkpoints"), ("run_groups", "--run-groups")):
      if getattr(self, name) is not None and getattr(self, name) < 1:
        found.append(f"{flag}: must be a positive integer, got {getattr(self, name)}")
    for name, flag in (("num_train_examples", "--train-examples"),
                       ("num_test_examples", "--test-examples")):
      if getattr(self, name) is not None and getattr(self, name) < 1:
        found.append(f"{flag}: must be positive, got {getattr(self, name)}")
    if self.seed_map is not None and self.seed_map not in SEED_MAPS:
      found.append(f"seed_map: unknown {self.seed_map!r}; choose one of {', '.join(SEED_MAPS)}")
    if self.precise_bn and self.model == "net":
      found.append("--precise-bn: Net has no BatchNorm; use it with --model tiny")
    if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
      found.append(f"--lr: must be a positive finite number, got {self.learning_rate}")
    if not (0 < self.gamma <= 1):
      found.append(f"--gamma: must lie in (0, 1], got {self.gamma}")
    if not (0 <= self.bn_momentum <= 1):
      found.append(f"--bn-momentum: must lie in [0, 1], got {self.bn_momentum}")
    return found

  def _sweep_problems(self, field_problems: list[str]) -> list[str]:
    found, seen = [], set()
    for name, values in self.sweep:
      if name in ("seed", "num_seeds"):
        found.append(f"--sweep {name}: seeds are an axis of every setting already; use --seeds N")
      elif name not in SWEEPABLE:
        why = ("changes the program's shapes or structure; train separate runs"
               if name in {f.name for f in dataclasses.fields(self)} else "is no config field")
        found.append(f"--sweep {name}: {why}; sweepable: {', '.join(SWEEPABLE)}")
      elif name in seen:
        found.append(f"--sweep {name}: given twice; list all its values once")
      elif name == "bn_momentum" and self.model == "net":
        found.append("--sweep bn_momentum: Net has no BatchNorm; use it with --model tiny")
      elif not values:
        found.append(f"--sweep {name}: no values; give {name}=V1,V2,...")
      else:
        for value in values:
          if isinstance(getattr(self, name), int) and not float(value).is_integer():
            found.append(f"--sweep {name}={value}: must be a whole number")
            continue
          with_value = copy.copy(self)  # not validated on creation, as a replace() would be
          object.__setattr__(with_value, name, value)
          found += [f"--sweep {name}={value}: {problem.split(': ', 1)[1]}"
                    for problem in with_value._field_problems() if problem not in field_problems]
      seen.add(name)
    return found

  def settings(self) -> list[dict]:
    """The sweep's grid: one dict of swept values per setting (one empty dict: no sweep)."""
    names = [name for name, _ in self.sweep]
    return [dict(zip(names, values))
            for values in itertools.product(*(values for _, values in self.sweep))]

  def setting(self, index: int) -> "Config":
    """The config of the grid's setting `index` trained alone, with the same seeds."""
    return dataclasses.replace(self, sweep=(), **self.settings()[index])

  @property
  def num_runs(self) -> int:
    """Runs trained together: every setting of the sweep with every seed."""
    return len(self.settings()) * self.num_seeds

  def replace(self, **changes) -> "Config":
    return dataclasses.replace(self, **changes)

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)
