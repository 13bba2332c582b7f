"""The README's Python example runs as written (with the data path filled in)."""

import os
import re
import subprocess
import sys

from conftest import MNIST_DIR, ROOT

README = (ROOT / "README.md").read_text()


def test_python_example_runs_and_learns(tmp_path):
  example = re.search(r"<!-- example -->\s*```python\n(.*?)```", README, re.S).group(1)
  script = tmp_path / "example.py"
  script.write_text(example.replace("path/to/mnist", MNIST_DIR))
  env = dict(os.environ, PYTHONPATH=str(ROOT))  # as after `pip install -e .`
  result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr
  accuracy = float(re.search(r"test accuracy: ([\d.]+)%", result.stdout).group(1))
  assert accuracy > 30, result.stdout  # chance is 10%; eval-mode BatchNorm is young after 60 steps


def test_ci_runs_the_readme_test_command():
  command = re.search(r"<!-- test-command -->\s*```bash\n(.*?)\n```", README, re.S).group(1)
  assert command in (ROOT / ".ci" / "run").read_text()
