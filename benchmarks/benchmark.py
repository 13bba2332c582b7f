"""What users wait for, mnist-jax beside the original PyTorch recipe, on this machine.

    python -m benchmarks.benchmark --data-dir ../shared/data/mnist --repeats 3

Each measurement runs in a process of its own, the two sides one after the other,
alternating over `--repeats`, and the median is reported:
  * a whole training epoch of TinyNet (batch 256) and of Net (batch 512), and one pass
    over the 10,000 test images. mnist-jax as train.py runs them (its XLA:CPU settings, the
    same jitted `epoch` functions, compiled before the clock starts; compile time is
    reported apart); the original recipe in PyTorch (benchmarks/original.py: torchvision's
    MNIST and train transform, DataLoader(num_workers=2), Adam, `loss.item()` per step);
  * the original README's whole 5-epoch experiment (TinyNet, batch 256, lr 0.01, a test
    pass after every epoch), each side's command from process start to exit:
    `train.py` and `original.py --full-run`.
Beside each: peak resident memory, and the achieved rate in GFLOP/s of the model's
convolutions and linear layers (forward and backward, the same arithmetic on both sides),
as a fraction of a large float32 matrix multiply's rate on the same cores (the better of
XLA's and PyTorch's), a practical peak. The header names the CPU and its vector
extensions: ratios differ between CPUs (docs/performance.md). Prints a table and writes
JSON (`--out`). Needs torch and torchvision (requirements-benchmark.txt) for the
original's side; `--skip-original` times mnist-jax alone. `--startup` measures start-up
instead (train.py and predict.py, twice each in a fresh compilation cache; no torch needed);
`--run-time` where whole train.py runs spend their time (phases, time to accuracy).
`--steps` times one training step (Adam, the first 256 or 512 training images in memory, no
augmentation) against the steps a user would pick instead (benchmarks/peers.py: PyTorch eager,
`channels_last` and `torch.compile`; idiomatic Flax), and mnist-jax's own `jax.jit(train_step)`
after a plain `import mnist_jax` and under JAX's defaults, each in its own process, alternating:

    python -m benchmarks.benchmark --data-dir ../shared/data/mnist --startup
    python -m benchmarks.benchmark --data-dir ../shared/data/mnist --run-time default speedrun
    python -m benchmarks.benchmark --data-dir ../shared/data/mnist --steps --repeats 3
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
XLA_FLAGS_AT_START = os.environ.get("XLA_FLAGS", "")  # before `import mnist_jax` adds its own
from benchmarks import common
from mnist_jax import cpu

EPOCH_CONFIGS = [("tiny", 256), ("net", 512)]
# The original README's experiment: TinyNet, batch 256, lr 0.01, 5 epochs.
HEADLINE = ["--model", "tiny", "--batch-size", "256", "--lr", "0.01", "--epochs", "5"]


def training_flops_per_image(model_name: str) -> float:
  """Multiply-adds of every convolution and linear layer, x2 for FLOPs, x3 for the forward
  pass, the input gradient and the weight gradient, less the first layer's input gradient,
  which nobody computes. BatchNorm, pooling and the optimizer are left out (a few %)."""
  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from mnist_jax import models  # pylint: disable=import-outside-toplevel
  model = models.get_model(model_name, "standard")  # the layers as flax modules: nn.Conv
  images = jnp.zeros((1, 28, 28, 1))
  variables = model.init(jax.random.key(0), images)
  _, captured = model.apply(variables, images, capture_intermediates=lambda m, _: isinstance(
      m, (nn.Conv, nn.Dense)), mutable=["intermediates"])
  macs = []
  for name, layer in captured["intermediates"].items():
    if name == "__call__":
      continue
    out = layer["__call__"][0]
    kernel = variables["params"][name]["kernel"]
    macs.append(int(jnp.size(out)) * int(jnp.size(kernel)) // kernel.shape[-1])
  return 2.0 * (3 * sum(macs) - macs[0])


def measure_jax(args) -> dict:
  """In a fresh process: train.py's CPU settings must precede JAX's initialisation."""
  common.use_train_py_settings(args.batch_size, args.host_devices)
  import resource  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  from mnist_jax import Config, Execution, epoch  # pylint: disable=import-outside-toplevel

  run = common.build(args.data_dir, Config(model=args.model, batch_size=args.batch_size),
                     Execution(formulation=args.formulation, steps_per_chunk=args.steps_per_chunk))
  state, sums, order, hyperparams = run.state, run.zero_sums(), run.order(1), run.hyperparams(1)

  # Warm-up: one call of every program the epoch runs (compiling each), so that the epoch
  # timed below is the steady state. Compile time is reported apart.
  start = time.perf_counter()
  for k in sorted(set(epoch.chunk_lengths(run.steps_per_epoch, run.steps_per_chunk))):
    state, sums = run.fns.train_steps(k)(state, sums, run.train, order, run.keys.augment,
                                         hyperparams)
  jax.block_until_ready(run.evaluate(state))
  warmup_s = time.perf_counter() - start

  start = time.perf_counter()
  state, sums, _ = run.train_epoch(state, epoch=1)
  jax.block_until_ready(sums)
  train_epoch_s = time.perf_counter() - start
  start = time.perf_counter()
  jax.block_until_ready(run.evaluate(state))
  eval_s = time.perf_counter() - start
  chunk, num_train = run.steps_per_chunk, run.num_train

  matmul_gflops = xla_matmul_gflops()
  return {"devices": f"{jax.device_count()} x {jax.devices()[0].device_kind}",
          "jax": jax.__version__, "steps_per_chunk": chunk, "warmup_s": warmup_s,
          "train_epoch_s": train_epoch_s, "images_per_s": num_train / train_epoch_s,
          "eval_s": eval_s, "matmul_gflops": matmul_gflops,
          "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


# --steps: the step a user would run, each in a process of its own: (code, settings,
# environment). "train.py" is train.py's XLA:CPU settings (2 host devices where they divide
# the batch), "import" a plain `import mnist_jax` (one device); PyTorch's layouts: peers.py.
# mnist-jax's rows run `--formulation` (train.py's default: auto), but the one named standard.
STEP_VARIANTS = {
    "mnist-jax, train.py's settings": ("mnist_jax", "train.py", {}),
    "mnist-jax standard formulation, train.py's settings": ("mnist_jax standard", "train.py", {}),
    "mnist-jax, plain import": ("mnist_jax", "import", {}),
    "mnist-jax, JAX's default convolutions": ("mnist_jax", "import", {cpu.FAST_CONV_ENV: "0"}),
    "idiomatic Flax, train.py's settings": ("flax", "train.py", {}),
    "PyTorch eager": ("torch", "eager", {}),
    "PyTorch eager, channels_last": ("torch", "channels_last", {}),
    "PyTorch torch.compile": ("torch", "compile", {}),
}


def xla_matmul_gflops(size: int = 2048, repeats: int = 5) -> float:
  """XLA's rate for one float32 size x size matrix product on these devices."""
  import jax  # pylint: disable=import-outside-toplevel
  matmul = jax.jit(lambda a, b: a @ b)
  a = jax.random.normal(jax.random.key(0), (size, size))
  jax.block_until_ready(matmul(a, a))
  start = time.perf_counter()
  for _ in range(repeats):
    jax.block_until_ready(matmul(a, a))
  return 2 * size ** 3 * repeats / (time.perf_counter() - start) / 1e9


def measure_step(args) -> dict:
  """ms per training step of one STEP_VARIANTS entry on the first `--batch-size` training
  images (no augmentation), per block of `--steps-per-block`, after 3 warm-up steps."""
  from benchmarks import peers  # pylint: disable=import-outside-toplevel
  code, settings, _ = STEP_VARIANTS[args.step_variant]
  if settings == "train.py":
    common.use_train_py_settings(args.batch_size)
  import numpy as np  # pylint: disable=import-outside-toplevel
  from mnist_jax import load_mnist, normalize  # pylint: disable=import-outside-toplevel
  train = load_mnist(args.data_dir)["train"]
  images, labels = train.images[:args.batch_size], train.labels[:args.batch_size]
  lr = 0.001
  if code.startswith("mnist_jax"):
    formulation = "standard" if code.endswith("standard") else args.formulation
    run = mnist_jax_steps(args.model, images, labels, lr, settings == "train.py", formulation)
  elif code == "flax":
    from mnist_jax import parallel  # pylint: disable=import-outside-toplevel
    run = peers.flax_steps(args.model, np.asarray(normalize(images)), labels, lr,
                           parallel.make_mesh())
  else:
    run = peers.torch_steps(args.model, np.asarray(normalize(images)), labels, lr, settings)
  run(3)
  blocks_ms = []
  for _ in range(args.step_blocks):
    start = time.perf_counter()
    run(args.steps_per_block)
    blocks_ms.append(1000 * (time.perf_counter() - start) / args.steps_per_block)
  if code == "torch":
    from benchmarks import original  # pylint: disable=import-outside-toplevel
    matmul = original.matmul_gflops()
  else:
    matmul = xla_matmul_gflops()
  return {"blocks_ms": blocks_ms, "step_ms": statistics.median(blocks_ms),
          "matmul_gflops": matmul}


def mnist_jax_steps(model_name, images, labels, lr, on_every_device: bool, formulation: str):
  """`jax.jit(train_step)` as a researcher runs it; `on_every_device`: the batch split over
  the host devices like train.py's (one device after a plain import)."""
  import jax  # pylint: disable=import-outside-toplevel
  import mnist_jax  # pylint: disable=import-outside-toplevel
  from benchmarks import peers  # pylint: disable=import-outside-toplevel
  from mnist_jax import parallel  # pylint: disable=import-outside-toplevel
  config = mnist_jax.Config(model=model_name, batch_size=len(labels), learning_rate=lr)
  state = mnist_jax.create_train_state(
      jax.random.key(0), mnist_jax.get_model(model_name, formulation), config, steps_per_epoch=1)
  step = jax.jit(mnist_jax.train_step, static_argnames="augment_images")
  key = jax.random.key(1)
  return peers.jax_steps(lambda state, batch: step(state, batch, key, augment_images=False),
                         state, ({"image": images, "label": labels},),
                         parallel.make_mesh() if on_every_device else None)


def steps_table(args) -> None:
  """Prints the --steps table: per model and variant, the median of the runs' median ms per
  step, the blocks' range, GFLOP/s and its fraction of the better matmul peak, and the ratio
  to mnist-jax under train.py's settings."""
  print(f"{common.cpu_description()}; {time.strftime('%Y-%m-%d')}")
  print("| model | batch | step | ms per step (blocks min-max) | GFLOP/s (of peak) | "
        "/ mnist-jax, train.py's settings |")
  print("|---|---|---|---|---|---|")
  env = dict(os.environ, XLA_FLAGS=XLA_FLAGS_AT_START)
  for model, batch_size in [c for c in EPOCH_CONFIGS if c[0] in args.models.split(",")]:
    runs = {variant: [] for variant in args.step_variants}
    for _ in range(args.repeats):
      for variant in runs:
        extra = STEP_VARIANTS[variant][2]
        runs[variant].append(json_line(
            [sys.executable, "-m", "benchmarks.benchmark", "--worker", "--data-dir",
             args.data_dir, "--model", model, "--formulation", args.formulation,
             "--batch-size", str(batch_size), "--step-variant", variant,
             "--step-blocks", str(args.step_blocks),
             "--steps-per-block", str(args.steps_per_block)], dict(env, **extra)))
        print(f"{model} {variant}: {runs[variant][-1]}", file=sys.stderr, flush=True)
    medians = {v: median_of(r, "step_ms") for v, r in runs.items()}
    peak = max((m["matmul_gflops"] for r in runs.values() for m in r if isinstance(m, dict)),
               default=float("nan"))
    reference = medians.get("mnist-jax, train.py's settings", "not measured")
    flops = training_flops_per_image(model) * batch_size
    for variant, m in medians.items():
      if isinstance(m, str):
        print(f"| {model} | {batch_size} | {variant} | failed: {m} | | |")
        continue
      blocks = [b for r in runs[variant] for b in r["blocks_ms"]]
      gflops = flops / m["step_ms"] / 1e6
      ratio = (f"{m['step_ms'] / reference['step_ms']:.2f}x" if isinstance(reference, dict)
               else "")
      print(f"| {model} | {batch_size} | {variant} | {m['step_ms']:,.1f} "
            f"({min(blocks):,.1f}-{max(blocks):,.1f}) | {gflops:.1f} ({100 * gflops / peak:.0f}%) "
            f"| {ratio} |")
    print(f"peak: the better float32 2048x2048 matrix multiply, {peak:.0f} GFLOP/s")


def run_process(command: list[str], env: dict | None = None) -> dict:
  """Wall time, peak resident memory (of the process and the children it waited for) and
  exit status of a command, its output kept for the caller."""
  with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=out, stderr=err, cwd=ROOT, text=True, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall_s = time.perf_counter() - start
    out.seek(0)
    err.seek(0)
    return {"wall_s": wall_s, "peak_rss_mb": usage.ru_maxrss / 1024,
            "returncode": os.waitstatus_to_exitcode(status),
            "stdout": out.read(), "stderr": err.read()}


def json_line(command: list[str], env: dict | None = None) -> dict | str:
  """The JSON line a measuring process prints, or why there is none."""
  result = run_process(command, env)
  if result["returncode"]:
    return (result["stderr"].strip().splitlines() or ["no output"])[-1]
  return json.loads(result["stdout"].strip().splitlines()[-1])


def headline_run(side: str, data_dir: str, scratch: str, formulation: str) -> dict | str:
  """The 5-epoch experiment as a user runs it: one process, start to final metrics."""
  if side == "mnist_jax":
    workdir = tempfile.mkdtemp(dir=scratch)
    command = [sys.executable, "train.py", *HEADLINE, "--steps-per-decay", "15",
               "--formulation", formulation,
               "--data-dir", data_dir, "--workdir", os.path.join(workdir, "run"), "--no-progress"]
  else:
    out = os.path.join(tempfile.mkdtemp(dir=scratch), "original.json")
    command = [sys.executable, "-m", "benchmarks.original", "--full-run",
               *HEADLINE, "--data-dir", data_dir, "--out", out]
  result = run_process(command)
  if result["returncode"]:
    return (result["stderr"].strip().splitlines() or ["no output"])[-1]
  if side == "mnist_jax":
    with open(os.path.join(workdir, "run", "metrics.jsonl")) as f:
      last = json.loads(f.read().splitlines()[-1])
  else:
    with open(out) as f:
      last = json.load(f)["runs"][0]["history"][-1]
  return {"wall_s": result["wall_s"], "peak_rss_mb": result["peak_rss_mb"],
          "test_accuracy": last["test_accuracy"]}


def startup(data_dir: str, scratch: str) -> None:
  """Start-up as users meet it, each command twice in one fresh compilation cache (the first
  run fills it, the second loads from it): a one-step train.py run (warm-up: compiling, or
  loading, the first step; and process start to first step, from its metrics.jsonl) with 1
  and 8 seeds, and predict.py on one picture (process start to exit)."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  from mnist_jax import load_mnist  # pylint: disable=import-outside-toplevel
  picture = os.path.join(scratch, "digit.png")
  Image.fromarray(255 - load_mnist(data_dir)["test"].images[0, ..., 0]).save(picture)
  print(f"{common.cpu_description()}; {time.strftime('%Y-%m-%d')}")
  print("| command | run | warm-up | process start to first step | process start to exit |")
  print("|---|---|---|---|---|")
  for seeds in (1, 8):
    cache = tempfile.mkdtemp(dir=scratch)
    for attempt in ("first", "second"):
      workdir = os.path.join(tempfile.mkdtemp(dir=scratch), "run")
      result = run_process([sys.executable, "train.py", "--seeds", str(seeds), "--epochs", "1",
                            "--batch-size", "256", "--train-examples", "256", "--data-dir",
                            data_dir, "--workdir", workdir, "--no-progress",
                            "--compilation-cache", cache])
      if result["returncode"]:
        print(f"| train.py --seeds {seeds} | {attempt} | failed: {result['stderr'][-300:]} |")
        continue
      with open(os.path.join(workdir, "metrics.jsonl")) as f:
        record = json.loads(f.readline())
      print(f"| train.py --seeds {seeds} (one step) | {attempt} | {record['warmup_seconds']:.1f} s "
            f"| {record.get('process_start_to_first_step_seconds', float('nan')):.1f} s "
            f"| {result['wall_s']:.1f} s |")
  cache = tempfile.mkdtemp(dir=scratch)
  for attempt in ("first", "second"):
    result = run_process([sys.executable, "predict.py", "results", picture,
                          "--compilation-cache", cache])
    print(f"| predict.py results ONE.png | {attempt} | | | {result['wall_s']:.1f} s"
          f"{'' if result['returncode'] == 0 else ' (failed)'} |")


# What `--run-time` times: the default run (the original's recipe, 20 epochs of TinyNet) and
# the speedrun (mnist_jax/configs/speedrun.py).
RUN_TIME_COMMANDS = {"default": [], "speedrun": ["--config", "speedrun"]}


def run_time(data_dir: str, scratch: str, names: list[str], extra: list[str]) -> None:
  """Where a run's time goes, as a user meets it: each command from process start to exit,
  twice in a fresh compilation cache (the first fills it, the second loads from it), with
  the phases the run reports in its metrics.jsonl. "Outside the epochs" is everything but
  training and evaluation; time to accuracy (airbench's way) is training plus the last test
  pass, compilation and start-up apart; per seed, divided by the seeds trained together."""
  print(f"{common.cpu_description()}; {time.strftime('%Y-%m-%d')}")
  print("| command | start | process start to exit | phases (sum) | training | evaluation | "
        "compilation | outside the epochs | time to accuracy (per seed) | test accuracy |")
  print("|---|---|---|---|---|---|---|---|---|---|")
  for name in names:
    cache = tempfile.mkdtemp(dir=scratch)
    for attempt in ("first", "second"):
      workdir = os.path.join(tempfile.mkdtemp(dir=scratch), "run")
      command = ["train.py", *RUN_TIME_COMMANDS[name], *extra]
      result = run_process([sys.executable, *command, "--data-dir", data_dir, "--workdir",
                            workdir, "--no-progress", "--compilation-cache", cache])
      shown = " ".join(command)
      if result["returncode"]:
        print(f"| {shown} | {attempt} | failed: {result['stderr'][-300:]} |")
        continue
      with open(os.path.join(workdir, "metrics.jsonl")) as f:
        last = json.loads(f.read().splitlines()[-1])
      phases = last["phases_seconds"]
      seeds = len(last.get("seeds", [0]))
      to_accuracy = phases["training"] + last["eval_seconds"]
      outside = phases["total"] - phases["training"] - phases["evaluation"]
      accuracy = 100 * last["test_accuracy"]
      if seeds > 1:
        accuracy_text = (f"{accuracy:.2f}% mean, {100 * last['test_accuracy_min']:.2f}% min "
                         f"({seeds} seeds)")
      else:
        accuracy_text = f"{accuracy:.2f}%"
      print(f"| {shown} | {attempt} | {result['wall_s']:.1f} s | {phases['total']:.1f} s "
            f"| {phases['training']:.1f} s | {phases['evaluation']:.1f} s "
            f"| {phases.get('compilation', 0):.1f} s | {outside:.1f} s "
            f"| {to_accuracy:.1f} s ({to_accuracy / seeds:.1f} s) | {accuracy_text} |", flush=True)
      print("  " + " ".join(f"{k} {v:.2f}" for k, v in phases.items()), flush=True)


def median_of(runs: list, key: str) -> dict | str:
  """The run with the median `key` (a failure, if any run failed)."""
  failed = [m for m in runs if isinstance(m, str)]
  if failed:
    return failed[0]
  return sorted(runs, key=lambda m: m[key])[len(runs) // 2]


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--data-dir", required=True)
  parser.add_argument("--out", default="benchmarks/out/benchmark.json")
  parser.add_argument("--repeats", type=int, default=1,
                      help="measure each side this many times, alternating; report the median")
  parser.add_argument("--models", default="tiny,net", help="whose epochs to time: tiny, net")
  parser.add_argument("--skip-headline", action="store_true",
                      help="leave out the whole 5-epoch run")
  parser.add_argument("--skip-original", action="store_true", help="time mnist-jax only")
  parser.add_argument("--host-devices", type=int, default=cpu.HOST_DEVICES,
                      help=f"CPU devices to split each batch over (train.py: {cpu.HOST_DEVICES})")
  parser.add_argument("--steps-per-chunk", type=int,
                      help="training steps per device program (train.py's flag); default: its")
  parser.add_argument("--formulation", default="auto", choices=("auto", "standard", "cpu"),
                      help="mnist-jax's layers (train.py's flag); default: auto")
  parser.add_argument("--startup", action="store_true",
                      help="measure start-up (train.py, predict.py, compilation cache) alone")
  parser.add_argument("--run-time", nargs="+", choices=list(RUN_TIME_COMMANDS),
                      help="time these train.py runs from process start to exit, phases "
                      "included, without and with the compilation cache")
  parser.add_argument("--run-flags", nargs=argparse.REMAINDER, default=[],
                      help="--run-time: more train.py flags (last on the line), e.g. "
                      "--train-examples 4096 for shorter epochs")
  parser.add_argument("--steps", action="store_true",
                      help="time the training step against its peers (see above) alone")
  parser.add_argument("--step-blocks", type=int, default=5, help="--steps: blocks per run")
  parser.add_argument("--steps-per-block", type=int, default=10, help="--steps: steps per block")
  parser.add_argument("--step-variants", nargs="+", choices=list(STEP_VARIANTS),
                      default=list(STEP_VARIANTS), help="--steps: which (default all)")
  parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--step-variant", help=argparse.SUPPRESS)
  parser.add_argument("--model", help=argparse.SUPPRESS)
  parser.add_argument("--batch-size", type=int, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:
    print(json.dumps(measure_step(args) if args.step_variant else measure_jax(args)))
    return
  if args.steps:
    steps_table(args)
    return
  sides = ["mnist_jax"] + ([] if args.skip_original else ["original"])
  os.makedirs("benchmarks/out", exist_ok=True)
  scratch = tempfile.mkdtemp(dir="benchmarks/out")
  if args.startup or args.run_time:
    if args.startup:
      startup(args.data_dir, scratch)
    else:
      run_time(args.data_dir, scratch, args.run_time, args.run_flags)
    shutil.rmtree(scratch)
    return

  rows = []
  for model, batch_size in [c for c in EPOCH_CONFIGS if c[0] in args.models.split(",")]:
    flags = ["--data-dir", args.data_dir, "--model", model, "--batch-size", str(batch_size)]
    commands = {
        "mnist_jax": [sys.executable, "-m", "benchmarks.benchmark", "--worker", "--host-devices",
                      str(args.host_devices), "--formulation", args.formulation, *flags]
                     + (["--steps-per-chunk", str(args.steps_per_chunk)]
                        if args.steps_per_chunk else []),
        "original": [sys.executable, "-m", "benchmarks.original", *flags]}
    measured = {side: [] for side in sides}
    for _ in range(args.repeats):  # alternating, so that a slow spell of the machine hits both
      for side in sides:
        measured[side].append(json_line(commands[side]))
        print(f"{model} {side}: {measured[side][-1]}", file=sys.stderr, flush=True)
    row = {"model": model, "batch_size": batch_size,
           "flops_per_image": training_flops_per_image(model)}
    for side, runs in measured.items():
      row[side] = median_of(runs, "train_epoch_s")
      row[side + "_all"] = runs
    rows.append(row)

  headline = {}
  if not args.skip_headline:
    for side in sides:
      headline[side + "_all"] = []
    for _ in range(args.repeats):
      for side in sides:
        headline[side + "_all"].append(headline_run(side, args.data_dir, scratch, args.formulation))
        print(f"headline {side}: {headline[side + '_all'][-1]}", file=sys.stderr, flush=True)
    for side in sides:
      headline[side] = median_of(headline[side + "_all"], "wall_s")

  peaks = [m["matmul_gflops"] for r in rows for s in sides for m in r[s + "_all"]
           if isinstance(m, dict)]
  peak = max(peaks) if peaks else float("nan")
  print(f"{common.cpu_description()}; {time.strftime('%Y-%m-%d')}")
  for side in sides:
    rates = [m["matmul_gflops"] for r in rows for m in r[side + "_all"] if isinstance(m, dict)]
    if rates:
      print(f"float32 2048x2048 matrix multiply, {side}: {statistics.median(rates):.0f} GFLOP/s")
  print("\n| model | batch | code | compile / start-up | train epoch | GFLOP/s (of peak) | "
        "eval (10k) | peak memory | original / mnist-jax |")
  print("|---|---|---|---|---|---|---|---|---|")
  for r in rows:
    ours, theirs = r["mnist_jax"], r.get("original")
    for name, m in (("mnist-jax", ours), ("original", theirs)):
      if m is None:
        continue
      if isinstance(m, str):
        print(f"| {r['model']} | {r['batch_size']} | {name} | failed: {m} |")
        continue
      gflops = r["flops_per_image"] * 60000 / m["train_epoch_s"] / 1e9
      m["gflops"], m["fraction_of_peak"] = gflops, gflops / peak
      memory = f"{m['peak_rss_mb']:,.0f} MB" + (
          f" + workers {m['peak_rss_worker_mb']:,.0f} MB" if "peak_rss_worker_mb" in m else "")
      ratio = ""
      if name == "mnist-jax" and isinstance(theirs, dict):
        r["speedup"] = theirs["train_epoch_s"] / m["train_epoch_s"]
        ratio = f"{r['speedup']:.2f}x (eval {theirs['eval_s'] / m['eval_s']:.1f}x)"
      print(f"| {r['model']} | {r['batch_size']} | {name} | {m['warmup_s']:.1f} s "
            f"| {m['train_epoch_s']:.1f} s | {gflops:.1f} ({100 * gflops / peak:.0f}%) "
            f"| {m['eval_s']:.2f} s | {memory} | {ratio} |")
  if headline:
    ours, theirs = headline["mnist_jax"], headline.get("original")
    print("\nThe original README's experiment (TinyNet, batch 256, lr 0.01, 5 epochs), "
          "process start to exit:")
    for name, m in (("mnist-jax (train.py)", ours), ("original (original.py --full-run)", theirs)):
      if isinstance(m, str):
        print(f"  {name}: failed: {m}")
      elif m is not None:
        print(f"  {name}: {m['wall_s']:.1f} s, final test accuracy "
              f"{100 * m['test_accuracy']:.2f}%, peak memory {m['peak_rss_mb']:,.0f} MB")
    if isinstance(ours, dict) and isinstance(theirs, dict):
      headline["speedup"] = theirs["wall_s"] / ours["wall_s"]
      print(f"  original / mnist-jax: {headline['speedup']:.2f}x")
  if args.repeats > 1:
    print("\nEach run (s):")
    for r in rows:
      for side in sides:
        print(f"  {r['model']} b{r['batch_size']} {side} train epoch: " + " / ".join(
            f"{m['train_epoch_s']:.1f}" if isinstance(m, dict) else "failed"
            for m in r[side + "_all"]))
    for side in sides:
      if headline:
        print(f"  headline run {side}: " + " / ".join(
            f"{m['wall_s']:.1f}" if isinstance(m, dict) else "failed"
            for m in headline[side + "_all"]))
  shutil.rmtree(scratch)
  os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
  with open(args.out, "w") as f:
    json.dump({"cpu": common.cpu_description(), "date": time.strftime("%Y-%m-%d"),
               "matmul_peak_gflops": peak, "rows": rows, "headline": headline}, f, indent=2)


if __name__ == "__main__":
  main()
