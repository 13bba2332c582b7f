"""train.py's command line, inside the package: `python -m mnist_jax` and the installed
`mnist-jax-train` run it from any folder, `python train.py` from a checkout.

    python train.py --data-dir ../shared/data/mnist                 # the original's defaults
    python -m mnist_jax --config tiny_headline --data-dir ../shared/data/mnist
    python train.py --sweep lr=0.001,0.01 --sweep bn_momentum=0.1,0.3 --seeds 4   # 16 runs at once

Kept short on purpose: the work is `mnist_jax.train_and_evaluate(config, workdir, execution)`.
Exit status: 0 done, 2 bad input (one line on stderr), 3 the loss diverged, 4 a process of a
multi-host run was lost (resume every process with --resume), 5 a file could not be written
(a full disk: free space, then --resume), 6 stopped by SIGTERM or SIGINT with a checkpoint of
the step it stopped at (--resume continues from it). docs/usage.md "When things fail".
"""

import argparse
import concurrent.futures
import datetime
import importlib
import importlib.util
import logging
import os
import re
import secrets
import sys
from typing import NoReturn

from mnist_jax import cli
from mnist_jax.config import FORMULATIONS, MODELS, SCHEDULES, SWEEPABLE, Config, Execution
from mnist_jax.phases import Phases

# Flag -> field of the recipe (Config) or of the Execution. Recipe flags left out keep the
# preset's value; execution flags left out keep Execution's defaults.
RECIPE_FLAGS = {"model": "model", "batch_size": "batch_size", "epochs": "num_epochs",
                "lr": "learning_rate", "schedule": "schedule", "step_size": "step_size",
                "gamma": "gamma", "warmup_fraction": "warmup_fraction",
                "bn_momentum": "bn_momentum", "seed": "seed", "seeds": "num_seeds",
                "precise_bn": "precise_bn", "train_examples": "num_train_examples",
                "test_examples": "num_test_examples"}
EXECUTION_FLAGS = {"formulation": "formulation", "steps_per_chunk": "steps_per_chunk",
                   "run_groups": "run_groups", "data_dir": "data_dir", "mnist_url": "mnist_url",
                   "compilation_cache": "compilation_cache", "profile": "profile_dir"}
PRESETS = "mnist_jax.configs"


def parse_args(argv=None, prog: str | None = None
               ) -> tuple[argparse.Namespace, Config, Execution]:
  d = Config()
  parser = cli.ArgumentParser(
      prog=prog, description="Train TinyNet or Net on MNIST with the original PyTorch script's "
      "recipe and flags.")
  parser.add_argument("--config", default="default",
                      help=f"a preset ({', '.join(preset_names())}: mnist_jax/configs/) "
                      "or a .py file whose get_config() returns a mnist_jax.Config")
  parser.add_argument("--model", choices=MODELS, help=f"default: {d.model}")
  parser.add_argument("--batch-size", type=int, help=f"default: {d.batch_size}")
  parser.add_argument("--epochs", type=int, help=f"default: {d.num_epochs}")
  parser.add_argument("--lr", type=float, help=f"Adam learning rate; default: {d.learning_rate}")
  parser.add_argument("--step-size", type=int,
                      help=f"StepLR: decay every N epochs; default: {d.step_size}")
  parser.add_argument("--steps-per-decay", type=int, help="the same as --step-size")
  parser.add_argument("--gamma", type=float, help=f"StepLR decay factor; default: {d.gamma}")
  parser.add_argument("--schedule", choices=SCHEDULES,
                      help="the rate's schedule: step (StepLR per epoch, the original's) or "
                      "onecycle (a linear warm-up to --lr, then linear to zero, per step); "
                      f"default: {d.schedule}")
  parser.add_argument("--warmup-fraction", type=float,
                      help=f"onecycle: the share of the steps spent warming up; default: "
                      f"{d.warmup_fraction}")
  parser.add_argument("--bn-momentum", type=float,
                      help=f"BatchNorm running averages, PyTorch's momentum; default: {d.bn_momentum}")
  parser.add_argument("--seed", type=int, help=f"default: {d.seed}")
  parser.add_argument("--seeds", type=int, help="train N independent runs at once, seeds "
                      "SEED, SEED+1, ...; report mean ± std (min-max); default: 1")
  parser.add_argument("--sweep", action="append", metavar="NAME=V1,V2,...",
                      help="train every value of NAME (repeatable: the grid of all of them), "
                      f"each with every seed, as one run axis; NAME: {', '.join(SWEEPABLE)} "
                      "(or the flag: lr, step-size, bn-momentum)")
  parser.add_argument("--precise-bn", action="store_true", default=None,
                      help="after each epoch also evaluate with BatchNorm statistics "
                      f"recomputed over {d.precise_bn_batches} training batches (TinyNet)")
  parser.add_argument("--data-dir", help="folder with the four MNIST IDX files (.gz or not); "
                      "default: download with tensorflow-datasets")
  parser.add_argument("--mnist-url", help="without --data-dir: where tensorflow-datasets "
                      "downloads the four .gz files (a mirror, or file:///a/folder/); "
                      "default: its own address")
  parser.add_argument("--train-examples", type=int,
                      help="train on the first N images only (quick runs)")
  parser.add_argument("--test-examples", type=int,
                      help="evaluate on the first N test images only (quick runs)")
  parser.add_argument("--workdir", help="run folder; default: a new runs/<time>-<model>-<id>")
  parser.add_argument("--resume", action="store_true",
                      help="continue the latest checkpoint in --workdir")
  parser.add_argument("--steps-per-chunk", type=int,
                      help="training steps per device program (a lax.scan of train_step); "
                      "default: the whole epoch on GPU/TPU, 1 on CPU")
  parser.add_argument("--run-groups", type=int, metavar="G",
                      help="split the runs (--seeds, --sweep) over G groups of devices, each "
                      "group splitting its runs' batches: a 2-D mesh; default: 1")
  parser.add_argument("--formulation", choices=FORMULATIONS,
                      help="how the layers are computed: standard (XLA's own), cpu (written "
                      "for XLA:CPU), auto (cpu on the CPU, standard elsewhere); the numbers "
                      "are the same within float rounding; default: auto")
  parser.add_argument("--no-cuda", action="store_true", help="train on the CPU")
  parser.add_argument("--no-progress", action="store_true", help="no progress bar")
  parser.add_argument("--verbose", action="store_true",
                      help="the libraries' own log lines too (orbax's and TFDS's through absl, "
                      "gloo's as processes connect), which train.py leaves out")
  parser.add_argument("--profile", metavar="DIR",
                      help="write a jax.profiler trace of a few training steps to DIR (open it "
                      "with `tensorboard --logdir DIR` or its perfetto_trace.json.gz at "
                      "ui.perfetto.dev)")
  multi = parser.add_argument_group("multi-host (jax.distributed; one process per host)")
  multi.add_argument("--coordinator-address", help="host:port of process 0")
  multi.add_argument("--num-processes", type=int)
  multi.add_argument("--process-id", type=int)
  multi.add_argument("--distributed", action="store_true",
                     help="join a cluster JAX detects by itself (TPU pod, SLURM)")
  multi.add_argument("--heartbeat-timeout", type=int, default=30, metavar="SECONDS",
                     help="a process silent this long is declared lost and the run stops "
                     "(default: 30; a killed process is noticed at its peers' next "
                     "collective, sooner)")
  args = parser.parse_args(argv)

  if args.steps_per_decay is not None:
    if args.step_size is not None and args.step_size != args.steps_per_decay:
      parser.error(f"--step-size {args.step_size} and --steps-per-decay "
                   f"{args.steps_per_decay} disagree; give one of them")
    args.step_size = args.steps_per_decay
  if args.resume and args.workdir is None:
    parser.error("--resume needs --workdir: the run folder to continue")
  if problem := multihost_problem(args):
    parser.error(problem)
  try:
    changes = {field: getattr(args, flag) for flag, field in RECIPE_FLAGS.items()
               if getattr(args, flag) is not None}
    if args.sweep:
      changes["sweep"] = tuple(parse_sweep(text) for text in args.sweep)
    config = load_preset(args.config).replace(**changes)
    execution = Execution(show_progress=not args.no_progress, **{
        field: getattr(args, flag) for flag, field in EXECUTION_FLAGS.items()
        if getattr(args, flag) is not None})
  except (ValueError, ImportError, AttributeError, FileNotFoundError, TypeError) as e:
    parser.error(str(e))
  return args, config, execution


def multihost_problem(args) -> str | None:
  """What is wrong with the multi-host flags, checked before JAX starts (None: nothing)."""
  explicit = (args.coordinator_address, args.num_processes, args.process_id)
  if any(v is not None for v in explicit) and args.distributed:
    return ("--distributed detects the cluster by itself; leave out --coordinator-address, "
            "--num-processes and --process-id, or --distributed")
  if any(v is not None for v in explicit) and not all(v is not None for v in explicit):
    return ("a multi-host run needs all of --coordinator-address HOST:PORT, --num-processes N "
            "and --process-id I (or --distributed on a cluster JAX detects)")
  if args.num_processes is not None and args.num_processes < 1:
    return f"--num-processes: must be a positive integer, got {args.num_processes}"
  if args.process_id is not None and not 0 <= args.process_id < args.num_processes:
    return (f"--process-id {args.process_id}: must lie in 0..{args.num_processes - 1} for "
            f"--num-processes {args.num_processes}")
  address = args.coordinator_address
  if address is not None and not re.fullmatch(r"\S+:\d+", address):
    return f"--coordinator-address {address!r}: expected HOST:PORT"
  return None


def parse_sweep(text: str) -> tuple[str, tuple]:
  """`lr=0.001,0.01` -> ("learning_rate", (0.001, 0.01)); Config checks name and values."""
  name, sep, values = text.partition("=")
  if not sep:
    raise ValueError(f"--sweep {text}: expected NAME=V1,V2,...")
  name = RECIPE_FLAGS.get(name.replace("-", "_"), name)
  numbers = []
  for value in filter(None, values.split(",")):
    try:
      number = float(value)
    except ValueError:
      raise ValueError(f"--sweep {name}={value}: not a number") from None
    numbers.append(int(number) if name == "step_size" and number.is_integer() else number)
  return name, tuple(numbers)


def preset_names() -> list[str]:
  """The presets' names: the modules of mnist_jax/configs/."""
  folder = os.path.dirname(importlib.util.find_spec(PRESETS).origin)
  return sorted(name[:-3] for name in os.listdir(folder)
                if name.endswith(".py") and not name.startswith("_"))


def load_preset(name: str) -> Config:
  """A preset's recipe, by name or from a .py file anywhere whose get_config() returns one.
  Whatever goes wrong in a file of the user's is one line naming the file (ValueError)."""
  if name.endswith(".py"):
    if not os.path.isfile(name):
      raise FileNotFoundError(f"--config: {name}: no such file")
    spec = importlib.util.spec_from_file_location("preset", name)
    module = importlib.util.module_from_spec(spec)
  elif name in preset_names():
    spec, module = None, importlib.import_module(f"{PRESETS}.{name}")
  else:
    raise ImportError(f"--config: no preset {name!r}; choose one of {', '.join(preset_names())}, "
                      "or give a .py file")
  try:
    if spec is not None:
      spec.loader.exec_module(module)
    get_config = getattr(module, "get_config", None)
    config = get_config() if callable(get_config) else None
  except ValueError as e:  # Config's own checks name the flag already
    raise ValueError(f"--config {name}: {e}") from None
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f"--config {name}: {type(e).__name__}: {e}") from None
  if config is None:
    raise AttributeError(f"--config {name}: defines no get_config()")
  if not isinstance(config, Config):
    raise TypeError(f"--config {name}: get_config() returned {type(config).__name__}, "
                    "not a mnist_jax.Config")
  return config


def new_workdir(model: str) -> str:
  """A fresh folder name; the random part keeps runs started in the same second apart.
  The trainer creates the folder once the data has loaded, so a failed start leaves none."""
  stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
  return os.path.join("runs", f"{stamp}-{model}-{secrets.token_hex(4)}")


def main(argv=None, prog: str | None = None) -> int:
  phases = Phases()  # "start": the interpreter and these imports, from the process's start
  args, config, execution = parse_args(argv, prog)
  prog = prog or os.path.basename(sys.argv[0])
  datasets = loading = None
  if execution.data_dir:
    from mnist_jax import data  # pylint: disable=import-outside-toplevel
    try:  # a missing folder or file is answered at once, before JAX loads
      data.check_data_dir(execution.data_dir)
    except data.DataError as e:
      print(f"{prog}: error: {e}", file=sys.stderr)
      return 2
    # The files are read while JAX imports: decompressing them (0.2 s on 2 cores) releases
    # the GIL, so it takes the core the imports leave idle.
    reader = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="data")
    loading = reader.submit(data.load_mnist, execution.data_dir)
    reader.shutdown(wait=False)  # its thread ends with the reading
  # Only now, so that --help and a bad flag are answered before JAX loads.
  phases.enter("imports")
  import jax  # pylint: disable=import-outside-toplevel
  import mnist_jax  # pylint: disable=import-outside-toplevel
  from mnist_jax import checkpointing, cpu, parallel, trainer  # pylint: disable=import-outside-toplevel
  if loading is not None:
    phases.enter("data")  # what is left of the reading
    try:
      datasets = loading.result()
    except mnist_jax.DataError as e:  # a file's contents
      print(f"{prog}: error: {e}", file=sys.stderr)
      return 2
  phases.listen_to_jax()
  phases.enter("backend")
  if args.no_cuda:
    jax.config.update("jax_platforms", "cpu")  # before any backend is initialised
  cpu.use_fast_convolutions()
  cpu.use_host_devices(config.batch_size)
  cli.use_compilation_cache(execution.compilation_cache)
  addresses = None
  if args.distributed or args.coordinator_address:
    try:
      addresses = parallel.initialize_distributed(args.coordinator_address, args.num_processes,
                                                  args.process_id, args.heartbeat_timeout,
                                                  quiet=not args.verbose)
    except (ValueError, RuntimeError) as e:  # e.g. --distributed where JAX detects no cluster
      print(f"{prog}: error: cannot join the multi-host run ({str(e).strip().splitlines()[0]}); "
            "on a cluster JAX does not detect, give --coordinator-address, --num-processes and "
            "--process-id", file=sys.stderr)
      return 2
  # Orbax and TFDS log through absl, orbax's abandoned background writes (a full disk) through
  # asyncio; their failures reach the user as one line below.
  if args.verbose:  # every library's own log lines too, on stderr
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:%(name)s:%(message)s")
    logging.getLogger("absl").setLevel(logging.INFO)  # (absl's own default: warnings)
  else:
    logging.getLogger("absl").setLevel(logging.CRITICAL)
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
  jax.devices()  # the backend starts here, not in the first phase that needs it

  if args.workdir is None and jax.process_count() > 1:
    print(f"{prog}: error: a multi-host run needs --workdir (the same shared folder on every "
          "host)", file=sys.stderr)
    return 2
  workdir = args.workdir or new_workdir(config.model)
  try:
    mnist_jax.train_and_evaluate(config, workdir, execution, resume=args.resume,
                                 datasets=datasets, phases=phases)
  except (mnist_jax.DataError, checkpointing.CheckpointError, trainer.RunError) as e:
    print(f"{prog}: error: {e}", file=sys.stderr)
    return 2
  except trainer.TrainingDiverged as e:
    print(f"{prog}: diverged: {e}", file=sys.stderr)
    return 3
  except (trainer.WriteFailed, checkpointing.CheckpointWriteError) as e:
    print(f"{prog}: error: {e}; free space (or make the folder writable) and run again with "
          "--resume" if "--resume" not in str(e) else f"{prog}: error: {e}", file=sys.stderr)
    return 5
  except trainer.Stopped as e:
    print(f"{prog}: {e}", file=sys.stderr)
    return 6
  except trainer.ProcessLost as e:
    lost = parallel.lost_processes(e.__cause__, addresses)
    count = jax.process_count()
    what = (f"lost {', '.join(f'process {i} ({addresses[i]})' for i in lost)} of {count}"
            if lost else f"a step of the {count}-process run failed, as when a process is lost")
    print(f"{prog}: error: {what}: {e}", file=sys.stderr, flush=True)
    # Not a normal exit: JAX's exit handler would wait at a shutdown barrier for the lost
    # process, then abort with a stack trace.
    os._exit(4)  # pylint: disable=protected-access
  if jax.process_index() == 0:
    print(f"done: {workdir}", flush=True)
  return 0


def run(argv=None, prog: str | None = None) -> NoReturn:
  """The entry points' `main`, then the process's end. A finished single-process run has
  written and closed everything, so it skips the interpreter's teardown (JAX's backends and
  every module: about 0.5 s on 2 cores, not part of any phase). A multi-host run ends the
  normal way: JAX's exit handler takes every process past a shutdown barrier together."""
  status = main(argv, prog)
  if status == 0 and sys.modules["jax"].process_count() == 1:  # (a run that ended loaded JAX)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # pylint: disable=protected-access
  sys.exit(status)

