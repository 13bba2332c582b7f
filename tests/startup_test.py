"""What a run compiles before and while it trains: one program for each thing it computes,
nothing op by op (each eager operation is a program of its own, traced, lowered and
compiled: 18 of them took about 0.6 s of every start of train.py on 2 CPU cores),
and nothing in orbax's save (its default "replica-parallel" writes compiled a slice program
per array and device in the first save: 16 programs on train.py's two CPU devices)."""

import json
import subprocess
import sys

from conftest import ROOT

# A fresh process (a process compiles each eager operation once: in the suite's workers,
# other tests would have compiled them already), on train.py's two CPU devices.
SCRIPT = """
import json, sys
from mnist_jax import cpu
cpu.use_host_devices(128, count=2)
import jax
compiled = []
jax.monitoring.register_event_time_span_listener(
    lambda event, start, end, **kwargs: compiled.append(kwargs["fun_name"])
    if event == "/jax/core/compile/backend_compile_duration" else None)
from mnist_jax import Config, Execution, checkpointing, load_mnist, run_axis
from mnist_jax import run as run_lib
config = Config(batch_size=128, num_train_examples=256, num_test_examples=200)
run = run_lib.build_run(config, Execution(), load_mnist(sys.argv[1]))
assert run.mesh.devices.size == 2
before = len(compiled)
state, sums, _ = run.train_epoch(run.state, 1)
train = run_axis.loss_and_accuracy(sums)
test = run_axis.loss_and_accuracy(run.evaluate(state))
checkpointer = checkpointing.Checkpointer(sys.argv[2])
checkpointer.save(1, state, {"history": []})
checkpointer.close()
restored, _ = checkpointing.Checkpointer(sys.argv[2]).restore(run.state)
assert int(restored.step) == 2, restored.step
print(json.dumps({"built": compiled[:before], "epoch": compiled[before:]}))
"""


def test_a_run_compiles_one_program_per_computation_and_nothing_op_by_op(mnist_dir, tmp_path):
  result = subprocess.run([sys.executable, "-c", SCRIPT, mnist_dir, str(tmp_path / "checkpoints")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  programs = json.loads(result.stdout.strip().splitlines()[-1])
  # The keys, the initial state; then the epoch's order, the training step and the test pass
  # (loss and accuracy are computed on the host, the checkpoint's save and restore compile none).
  assert programs == {"built": ["jit(derive)", "jit(create_train_state)"],
                      "epoch": ["jit(order)", "jit(train_batch)", "jit(evaluate)"]}, programs
