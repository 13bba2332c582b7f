#!/usr/bin/env bash
# The GPU checks of issues #13, #20 and #34 as one run, on a machine with an NVIDIA GPU, jax[cuda],
# flax, optax, orbax-checkpoint, torch and torchvision (TFDS is not needed: --data-dir):
#
#     bash benchmarks/gpu.sh DATA_DIR OUT_DIR
#
# 1. the machine, the versions, and whether float32 convolutions and matrix products round
#    to TF32 on this GPU under JAX's default precision (against precision=HIGHEST);
# 2. the README's default run end to end (`train.py --model tiny --steps-per-decay 15`:
#    TinyNet, batch 512, 20 epochs), from process start to exit, twice in one fresh
#    compilation cache (the second start loads its programs) with `--formulation auto`
#    (standard on a GPU), then once with `--formulation cpu`, and the original README's
#    5-epoch experiment (`--config tiny_headline`) once;
# 3. benchmarks/benchmark.py on the GPU, both sides: a training epoch and the test pass of
#    each model, the 5-epoch experiment process start to exit (the original script trains on
#    the GPU when PyTorch sees one, as main.py does);
# 4. benchmarks/benchmark.py --steps: one training step (both formulations) against PyTorch
#    eager, channels_last, torch.compile and idiomatic Flax;
# 5. benchmarks/ab_steps.py --formulations standard cpu: the two formulations' steps
#    alternating in one process, both models: what `--formulation auto` should pick here.
# 6. benchmarks/benchmark.py --run-time default speedrun: both runs' phases, without and with
#    the compilation cache, and the speedrun's time to accuracy (issue #36).
# PARTS (default "machine train benchmark steps formulation runtime") runs some of them;
# STEP_VARIANTS (default all; names separated by ";") is passed to benchmark.py
# --step-variants. Each part's output lands in OUT_DIR (a file or two per part) as it runs, so a
# cut-short run keeps what it finished.
set -u
data=$1 out=$2
mkdir -p "$out"
scratch=$(mktemp -d)
export PYTHONUNBUFFERED=1
python=${PYTHON:-python3}
# XLA refuses to start on an XLA_FLAGS option it does not know. The CPU convolution flag
# that `import mnist_jax` adds is this project's jaxlib's (requirements.txt) and changes
# nothing on a GPU, so a machine with another jaxlib runs without it.
if ! $python -c "import mnist_jax, jax; jax.devices()" > /dev/null 2>&1; then
  export MNIST_JAX_FAST_CONVOLUTIONS=0
  echo "MNIST_JAX_FAST_CONVOLUTIONS=0: this jaxlib does not know the CPU convolution flag" \
      > "$out/flags.txt"
fi

part() { [[ " ${PARTS:-machine train benchmark steps formulation runtime} " == *" $1 "* ]]; }

part machine && {
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  lscpu | grep -m1 "Model name"
  echo "cores: $(nproc)"
  $python -c "import jax, flax, optax, orbax.checkpoint, torch, torchvision, numpy
print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__,
      'orbax-checkpoint', orbax.checkpoint.__version__, 'torch', torch.__version__,
      'torchvision', torchvision.__version__, 'numpy', numpy.__version__)"
  $python - <<'EOF'
import jax
import jax.numpy as jnp
from jax import lax

print("JAX devices:", jax.devices())
x = jax.random.normal(jax.random.key(0), (256, 28, 28, 20))
kernel = jax.random.normal(jax.random.key(1), (3, 3, 20, 28))
matrix = jax.random.normal(jax.random.key(2), (2048, 2048))
for name, f, operands in [
    ("matmul 2048x2048", lambda a, b, p: jnp.matmul(a, b, precision=p), (matrix, matrix)),
    ("conv 3x3 20->28 b256", lambda a, b, p: lax.conv_general_dilated(
        a, b, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=p),
     (x, kernel))]:
  default = jax.jit(lambda a, b: f(a, b, None))(*operands)
  highest = jax.jit(lambda a, b: f(a, b, lax.Precision.HIGHEST))(*operands)
  error = float(jnp.max(jnp.abs(default - highest)) / jnp.max(jnp.abs(highest)))
  print(f"{name}: default precision vs HIGHEST, max |difference| / max |value| = {error:.1e} "
        f"({'TF32-like: 10-bit mantissa' if error > 1e-5 else 'float32'})")
EOF
} 2>&1 | tee "$out/machine.txt"

run_train() {  # NAME ARGS...: train.py from process start to exit, its metrics summarised
  local name=$1
  shift
  local start end
  start=$(date +%s.%N)
  echo "== $name: train.py $*" >> "$out/train.log"
  $python train.py --data-dir "$data" --no-progress --workdir "$scratch/$name" "$@" \
      >> "$out/train.log" 2>&1
  local rc=$?
  end=$(date +%s.%N)
  cat "$scratch/$name/metrics.jsonl" >> "$out/train.log" 2>/dev/null
  $python - "$scratch/$name/metrics.jsonl" "$start" "$end" "$rc" "$name" <<'EOF'
import json, sys
path, start, end, rc, name = sys.argv[1:]
wall = float(end) - float(start)
try:
  records = [json.loads(line) for line in open(path)]
except OSError:
  records = []
if not records:
  print(f"{name}: exit {rc}, no metrics, {wall:.1f} s")
  sys.exit()
first, last = records[0], records[-1]
print(f"{name}: exit {rc}; process start to exit {wall:.1f} s; "
      f"warm-up {first.get('warmup_seconds', float('nan')):.2f} s; process start to first step "
      f"{first.get('process_start_to_first_step_seconds', float('nan')):.2f} s; "
      f"{len(records)} epochs, training {sum(r['epoch_seconds'] for r in records):.2f} s "
      f"(epochs {min(r['epoch_seconds'] for r in records):.3f}-"
      f"{max(r['epoch_seconds'] for r in records):.3f} s), test passes "
      f"{sum(r['eval_seconds'] for r in records):.2f} s; final test accuracy "
      f"{100 * last['test_accuracy']:.2f}%")
EOF
}

part train && {
  echo "== the default run, first start (fresh compilation cache)"
  run_train default-first --model tiny --steps-per-decay 15 --compilation-cache "$scratch/cache"
  echo "== the same, second start (the cache holds its programs)"
  run_train default-second --model tiny --steps-per-decay 15 --compilation-cache "$scratch/cache"
  echo "== the same with the CPU formulation (its programs are not in the cache yet)"
  run_train default-cpu-formulation --model tiny --steps-per-decay 15 --formulation cpu \
      --compilation-cache "$scratch/cache"
  echo "== the original README's experiment"
  run_train headline --config tiny_headline --compilation-cache "$scratch/cache"
} 2>&1 | tee "$out/train.txt"

part benchmark && $python -m benchmarks.benchmark --data-dir "$data" --repeats 1 \
    --out "$out/benchmark.json" 2>&1 | tee "$out/benchmark.txt"
variants=()
[[ -n "${STEP_VARIANTS:-}" ]] && IFS=';' read -ra variants <<< "$STEP_VARIANTS"
part steps && $python -m benchmarks.benchmark --data-dir "$data" --steps --repeats 1 \
    --steps-per-block 20 ${variants[@]+--step-variants "${variants[@]}"} 2>&1 | tee "$out/steps.txt"
if part formulation; then
  for model in tiny net; do
    $python -m benchmarks.ab_steps --data-dir "$data" --model $model --rounds 8 --steps 20 \
        --formulations standard cpu
  done 2>&1 | tee "$out/formulation.txt"
fi
part runtime && $python -m benchmarks.benchmark --data-dir "$data" --run-time default speedrun \
    2>&1 | tee "$out/runtime.txt"
rm -rf "$scratch"
