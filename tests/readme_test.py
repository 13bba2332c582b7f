"""The code examples of the README and docs/ run as written (the data path filled in)."""

import os
import re
import subprocess
import sys

import pytest

from conftest import MNIST_DIR, ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
EXAMPLES = [(page.relative_to(ROOT), k, code) for page in PAGES for k, code in enumerate(
    re.findall(r"<!-- example -->\s*```python\n(.*?)```", page.read_text(), re.S))]
# What each example must print: a line that shows it did its work.
EXPECTED = {("README.md", 0): r"test accuracy: ([\d.]+)%",
            ("docs/usage.md", 0): r"epoch 5, bn1 mean \(8, 20\)"}


def test_every_example_is_checked():
  assert {(str(page), k) for page, k, _ in EXAMPLES} == set(EXPECTED)


@pytest.mark.parametrize("page,index,code", EXAMPLES, ids=lambda x: str(x)[:20])
def test_example_runs(tmp_path, page, index, code):
  script = tmp_path / "example.py"
  script.write_text(code.replace("path/to/mnist", MNIST_DIR))
  env = dict(os.environ, PYTHONPATH=str(ROOT))  # as after `pip install -e .`
  # From the repository root, where the examples' relative paths (results/) lead.
  result = subprocess.run([sys.executable, str(script)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr
  found = re.search(EXPECTED[str(page), index], result.stdout)
  assert found, result.stdout
  if str(page) == "README.md":
    # Chance is 10%; eval-mode BatchNorm is young after 60 steps.
    assert float(found.group(1)) > 30, result.stdout


def test_ci_runs_the_readme_test_command():
  command = re.search(r"<!-- test-command -->\s*```bash\n(.*?)\n```",
                      (ROOT / "README.md").read_text(), re.S).group(1)
  assert command in (ROOT / ".ci" / "run").read_text()
