"""The run's figures read at a glance: every title, label and legend inside the figure, no
legend over a panel's data, no empty panel (training_curves.png and sweep.png, drawn from
records as train.py writes them)."""

import numpy as np
import pytest

from mnist_jax import Config, reporting

METRICS = ("train_loss", "train_accuracy", "test_loss", "test_accuracy")


def _history(config: Config, epochs: int = 5) -> list[dict]:
  rng = np.random.default_rng(0)
  names = METRICS + (("test_loss_precise_bn", "test_accuracy_precise_bn")
                     if config.precise_bn else ())
  return [reporting.epoch_record(
      config, epoch, {name: rng.uniform(0.9, 1.0, config.num_runs) for name in names},
      [config.learning_rate] * config.num_runs,
      {"epoch_seconds": 1.0, "eval_seconds": 0.1, "images_per_second": 1000.0})
      for epoch in range(1, epochs + 1)]


def _check_layout(fig, legends_below_data: bool = False) -> None:
  fig.canvas.draw()
  renderer = fig.canvas.get_renderer()
  inside = fig.bbox.padded(1)  # a pixel of rounding
  for ax in fig.axes:
    # Everything drawn for the panel: its title, labels, tick labels, legend.
    box = ax.get_tightbbox(renderer)
    assert (inside.x0 <= box.x0 and box.x1 <= inside.x1 and inside.y0 <= box.y0
            and box.y1 <= inside.y1), (ax.get_title(), box, fig.bbox)
    assert any(np.isfinite(np.asarray(line.get_ydata(), float)).any() for line in ax.lines), \
        f"empty panel: {ax.get_title()!r}"
    if legends_below_data and ax.get_legend():
      assert ax.get_legend().get_window_extent(renderer).y1 <= ax.get_window_extent(renderer).y0


@pytest.mark.parametrize("config", [Config(), Config(num_seeds=8, precise_bn=True),
                                    Config(sweep=(("learning_rate", (0.001, 0.01)),),
                                           num_seeds=2, precise_bn=True)],
                         ids=["one run", "8 seeds, precise BN", "sweep"])
def test_the_curves_fit_their_figure(config):
  fig = reporting.curves_figure(_history(config))
  try:
    assert len(fig.axes) == 4
    _check_layout(fig)
  finally:
    reporting._matplotlib_pyplot().close(fig)


@pytest.mark.parametrize("sweep, panels", [
    ((("learning_rate", (0.001, 0.003, 0.01, 0.03)), ("gamma", (0.1,)), ("step_size", (15,))),
     ["learning_rate"]),
    ((("learning_rate", (0.001, 0.01, 0.1)), ("bn_momentum", (0.1, 0.3, 0.5))),
     ["learning_rate", "bn_momentum"])], ids=["one field varies", "a grid"])
def test_a_sweep_has_a_panel_per_varied_field_and_its_legends_clear_the_data(sweep, panels):
  config = Config(sweep=sweep, num_seeds=4, precise_bn=True)
  fig = reporting.sweep_figure(config, _history(config, epochs=2))
  try:
    assert [ax.get_xlabel() for ax in fig.axes] == panels
    _check_layout(fig, legends_below_data=True)
    if len(panels) == 1:
      assert "gamma=0.1 step_size=15 throughout" in fig.axes[0].get_title()
  finally:
    reporting._matplotlib_pyplot().close(fig)
