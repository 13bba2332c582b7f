"""A run's configuration in two halves, each a typed, JSON-serialisable record:

- `Config`, the recipe: what a run computes (model, optimizer, schedule, seeds, sweep,
  augmentation, data subset, evaluation extras). A resumed run must match it; only
  `num_epochs` may grow.
- `Execution`: how it is computed and where things are (formulation, chunking, seed map,
  device groups, evaluation batch, progress, checkpoints kept, data location, compilation
  cache). It changes speed and float rounding, never the recipe.

Presets are recipes: `mnist_jax/configs/`. Names the command line validates live here, with
no JAX import, so that `--help` and bad flags are answered before JAX loads.
"""

import copy
import dataclasses
import itertools
import math

MODELS = ("tiny", "net")
# How the models' layers are computed (mnist_jax/models.py): "standard" (XLA's own), "cpu"
# (written for XLA:CPU: mnist_jax/cpu_formulation.py), "auto" ("cpu" on the CPU backend).
FORMULATIONS = ("auto", "standard", "cpu")
SEED_MAPS = ("vmap", "unroll")  # see mnist_jax/run_axis.py
# The learning rate's schedule (mnist_jax/optim.py): "step", the original's StepLR per epoch;
# "onecycle", a linear warm-up then a linear decay to zero over the whole run, per step.
SCHEDULES = ("step", "onecycle")
# Fields a sweep may vary: they change numbers, not the program's shapes or structure, so
# the runs of a grid are entries of one run axis (steps.train_step's `hyperparams`).
SWEEPABLE = ("learning_rate", "step_size", "gamma", "bn_momentum")


def _positive(record, fields: dict[str, str]) -> list[str]:
  """`flag: must be a positive integer` for each field (name -> flag) below 1."""
  return [f"{flag}: must be a positive integer, got {getattr(record, name)}"
          for name, flag in fields.items()
          if getattr(record, name) is not None and getattr(record, name) < 1]


class _Record:
  """What both halves do as JSON-serialisable frozen dataclasses."""

  def replace(self, **changes):
    return dataclasses.replace(self, **changes)

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, saved: dict):
    """A record from a JSON dict, of this version or an earlier one: keys it has no field for
    are left out (config.json files written before the split hold both halves flat)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in saved.items() if k in names})


@dataclasses.dataclass(frozen=True)
class Config(_Record):
  """The recipe. Its defaults are the original script's."""
  model: str = "tiny"  # "tiny" (TinyNet, 22,334 params) or "net" (Net, 593,200 params)
  batch_size: int = 512  # the original's default; the last partial batch is kept
  num_epochs: int = 20
  learning_rate: float = 1e-3  # Adam; "onecycle": the peak
  schedule: str = "step"  # SCHEDULES
  step_size: int = 15  # StepLR: multiply the rate by gamma every step_size epochs
  gamma: float = 0.1
  warmup_fraction: float = 0.25  # "onecycle": the share of all steps spent warming up
  bn_momentum: float = 0.1  # BatchNorm running averages: PyTorch's momentum (the new batch's)
  seed: int = 0  # parameters, data order and augmentation all derive from it
  num_seeds: int = 1  # independent runs trained together: seeds seed, seed+1, ...
  # A grid trained as one run axis: (field, values) pairs of SWEEPABLE fields; every
  # setting (the product of their values) runs with each of the num_seeds seeds.
  sweep: tuple[tuple[str, tuple[float, ...]], ...] = ()
  augment: bool = True  # the original's random crop+resize and rotation
  num_train_examples: int | None = None  # the first N training images (quick runs); None: all
  num_test_examples: int | None = None  # the first N test images (quick runs); None: all
  precise_bn: bool = False  # also evaluate with BatchNorm statistics recomputed per epoch
  precise_bn_batches: int = 40  # training batches they are recomputed over
  precise_bn_augment: bool = False  # those batches with the train transform (else clean)

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
    found += _positive(self, {"batch_size": "--batch-size", "num_epochs": "--epochs",
                              "num_seeds": "--seeds", "step_size": "--step-size",
                              "precise_bn_batches": "precise_bn_batches"})
    for name, flag in (("num_train_examples", "--train-examples"),
                       ("num_test_examples", "--test-examples")):
      if getattr(self, name) is not None and getattr(self, name) < 1:
        found.append(f"{flag}: must be positive, got {getattr(self, name)}")
    if self.precise_bn and self.model == "net":
      found.append("--precise-bn: Net has no BatchNorm; use it with --model tiny")
    if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
      found.append(f"--lr: must be a positive finite number, got {self.learning_rate}")
    if self.schedule not in SCHEDULES:
      found.append(f"--schedule: unknown schedule {self.schedule!r}; choose one of "
                   f"{', '.join(SCHEDULES)}")
    if not (0 <= self.warmup_fraction < 1):
      found.append(f"--warmup-fraction: must lie in [0, 1), got {self.warmup_fraction}")
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
      elif name != "bn_momentum" and self.schedule == "onecycle":
        found.append(f"--sweep {name}: with --schedule onecycle the rate changes every step, "
                     "the same for all runs; sweep it with --schedule step, or train separate runs")
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

  def resume_problem(self, saved: "Config", epochs_done: int) -> str | None:
    """Why a run of this recipe cannot continue a checkpoint of `saved` after `epochs_done`
    epochs (None: it can). Every field must match but `num_epochs`, which may grow: the
    StepLR does not depend on it, so more epochs continue the same run (a one-cycle
    schedule spans the run's epochs: they must match too)."""
    if self.num_epochs < epochs_done:
      return (f"--epochs {self.num_epochs}: the run has done {epochs_done} epochs already; "
              f"give --epochs {epochs_done} or more")
    free = () if self.schedule == "onecycle" else ("num_epochs",)
    changed = [f.name for f in dataclasses.fields(self)
               if f.name not in free and getattr(saved, f.name) != getattr(self, f.name)]
    if not changed:
      return None
    details = ", ".join(f"{k}={_shown(k, getattr(saved, k))} (now {_shown(k, getattr(self, k))})"
                        for k in changed)
    return (f"cannot resume: the checkpoint was made with {details}; resume with the same "
            "settings or start a new --workdir")


def _shown(field: str, value) -> str:
  if field == "sweep":  # as the flags that give it
    return repr(" ".join(f"--sweep {name}={','.join(f'{v:g}' for v in values)}"
                         for name, values in value) or "none")
  return repr(value)


@dataclasses.dataclass(frozen=True)
class Execution(_Record):
  """How a run is computed. Nothing here changes the recipe; a resumed run may change any of it."""
  # FORMULATIONS ("auto": "cpu" on the CPU backend, else "standard"), or a formulation
  # object (`cpu_formulation.CpuFormulation` with other sub-choices: the benchmarks' variants)
  formulation: object = "auto"
  seed_map: str | None = None  # how many runs are computed (speed only); None: per backend
  run_groups: int = 1  # device groups the run axis is split over (a runs x data mesh)
  steps_per_chunk: int | None = None  # training steps per device program; None: per backend
  eval_batch_size: int = 1000
  show_progress: bool = True  # the progress bar (process 0 only)
  progress_every_steps: int = 20  # progress-bar refresh; each refresh waits for the device
  keep_checkpoints: int = 3
  data_dir: str | None = None  # four IDX files; None: tensorflow-datasets
  mnist_url: str | None = None  # where TFDS downloads the .gz files (a mirror, file://)
  compilation_cache: str | None = None  # a folder or "off"; None: mnist_jax.cli's default
  profile_dir: str | None = None  # a jax.profiler trace of a few steps (phases.StepTrace)

  def __post_init__(self):
    problems = self.problems()
    if problems:
      raise ValueError("; ".join(problems))

  def problems(self) -> list[str]:
    found = _positive(self, {"run_groups": "--run-groups", "steps_per_chunk": "--steps-per-chunk",
                             "eval_batch_size": "eval_batch_size",
                             "progress_every_steps": "progress_every_steps",
                             "keep_checkpoints": "keep_checkpoints"})
    if isinstance(self.formulation, str) and self.formulation not in FORMULATIONS:
      found.append(f"--formulation: unknown {self.formulation!r}; choose one of "
                   f"{', '.join(FORMULATIONS)}")
    if self.seed_map is not None and self.seed_map not in SEED_MAPS:
      found.append(f"seed_map: unknown {self.seed_map!r}; choose one of {', '.join(SEED_MAPS)}")
    return found
