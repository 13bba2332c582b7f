"""scripts/accuracy_table.py: the Mann-Whitney p-value behind the comparisons in docs/results.md."""

import subprocess
import sys

import pytest

from conftest import ROOT
from scripts.accuracy_table import mann_whitney_p


def test_exact_p_values_of_separated_samples():
  # Completely separated samples: 2 of the C(n, m) equally likely splits are this extreme.
  assert mann_whitney_p([1, 2, 3], [4, 5, 6]) == pytest.approx(2 / 20)
  assert mann_whitney_p([5, 6, 7, 8], [1, 2, 3, 4]) == pytest.approx(2 / 70)
  assert mann_whitney_p([1.0] * 4, [1.0] * 4) == 1.0


def test_ties_and_order_do_not_matter_beyond_ranks():
  # Mid-ranks: {98.0, 98.0} tie across the groups; p is the same under any monotone rescaling.
  a, b = [97.1, 98.0, 98.5, 96.9], [98.0, 98.7, 99.0, 98.8]
  p = mann_whitney_p(a, b)
  assert p == mann_whitney_p(b, a)
  assert p == pytest.approx(mann_whitney_p([x ** 3 for x in a], [x ** 3 for x in b]))
  assert 0.02 < p < 0.2


def test_normal_approximation_for_large_samples():
  # 40 + 40 values: too many splits to enumerate; separated samples give a tiny p.
  assert mann_whitney_p(list(range(40)), list(range(40, 80))) < 1e-10
  assert mann_whitney_p(list(range(0, 80, 2)), list(range(1, 80, 2))) > 0.5


def test_a_missing_or_wrong_file_is_one_line(tmp_path):
  """The README's third results command before the second has run: one line, exit 2."""
  (tmp_path / "wrong.json").write_text('{"no": "runs"}')
  for extra, words in ((["--original", str(tmp_path / "MISSING.json")], "MISSING.json: No such file"),
                       (["--original", str(tmp_path / "wrong.json")], "is not what train.py")):
    result = subprocess.run([sys.executable, "-m", "scripts.accuracy_table", "results", *extra],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert words in result.stderr and "Traceback" not in result.stderr, result.stderr


@pytest.mark.parametrize("script", ["accuracy_table", "precise_bn", "predict_agreement",
                                    "tensorboard_events"])
def test_help_describes_the_script_in_whole_sentences(script):
  result = subprocess.run([sys.executable, "-m", f"scripts.{script}", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr
  description = " ".join(result.stdout.split("\n\n")[1].split())  # after the usage lines
  assert description.endswith((".", "?")) and len(description) > 60, description
