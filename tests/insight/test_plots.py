"""Loss curves: loss.png in every run folder at the end of training, `charrnn plot` for several
runs, and matplotlib never loaded by `import charrnn` or sampling."""
import json
import math

import pytest
from click.testing import CliRunner

from charrnn import CharRNNError
from charrnn.cli.commands import main
from charrnn.insight.plots import draw, read_curves, save_loss_png

PNG = b"\x89PNG\r\n\x1a\n"


def test_training_leaves_loss_png_in_the_run_folder(trained):
    data = (trained / "loss.png").read_bytes()
    assert data.startswith(PNG) and len(data) > 10_000
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1000, 700)       # loss, and the gradient norm below it


def test_the_curves_are_the_metrics_in_bits_per_character(trained):
    records = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    curves = read_curves(trained)
    assert curves.step == [r["step"] for r in records]
    assert curves.val_bpc == pytest.approx([r["val_loss"] / math.log(2) for r in records])
    assert curves.train_bpc == pytest.approx([r["train_loss"] / math.log(2) for r in records])
    figure = draw([curves, curves])
    by_step, by_time, grad_by_step, grad_by_time = figure.axes
    (validation, training, *_) = by_step.get_lines()
    assert list(validation.get_xdata()) == curves.step
    assert list(validation.get_ydata()) == pytest.approx(curves.val_bpc)
    assert list(by_time.get_lines()[0].get_xdata()) == pytest.approx(curves.elapsed)  # seconds
    assert grad_by_time.get_xlabel() == "training time (seconds)"   # on the lower row
    assert len(by_step.get_lines()) == 4                      # two runs, two curves each
    # The gradient norm before clipping: the mean and the max between evaluations, log scale.
    assert curves.grad_mean == [r["grad_norm_mean"] for r in records]
    assert curves.grad_max == [r["grad_norm_max"] for r in records]
    mean, most = grad_by_step.get_lines()[:2]
    assert list(mean.get_xdata()) == curves.step and list(mean.get_ydata()) == curves.grad_mean
    assert list(most.get_ydata()) == curves.grad_max
    assert list(grad_by_time.get_lines()[0].get_xdata()) == pytest.approx(curves.elapsed)
    assert grad_by_step.get_yscale() == "log" and grad_by_step.get_xlabel() == "step"
    assert len(grad_by_step.get_lines()) == 4


def test_a_run_recorded_before_gradient_norms_draws_the_losses_alone(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(
        '{"step": 10, "elapsed": 1.0, "train_loss": 3.0, "val_loss": 2.9}\n'
        '{"step": 20, "elapsed": 2.0, "train_loss": 2.5, "val_loss": 2.4}\n')
    curves = read_curves(tmp_path)
    assert not curves.has_grad_norms and all(math.isnan(v) for v in curves.grad_mean)
    assert len(draw([curves]).axes) == 2
    data = (tmp_path / "loss.png").read_bytes() if save_loss_png(tmp_path) else b""
    assert (int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")) == (1000, 400)


def test_plot_compares_runs_in_one_png(trained, tmp_path):
    out = tmp_path / "runs.png"
    result = CliRunner().invoke(main, ["plot", str(trained), str(trained), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes().startswith(PNG)


def test_plot_refuses_a_folder_without_metrics_and_an_unwritable_out(trained, tmp_path):
    result = CliRunner().invoke(main, ["plot", str(tmp_path), "--out", str(tmp_path / "x.png")])
    assert result.exit_code == 1
    assert result.output.startswith(f"error: cannot read {tmp_path / 'metrics.jsonl'}")
    (tmp_path / "file").write_text("x")
    with pytest.raises(CharRNNError, match="cannot write .*choose another --out"):
        from charrnn.api import plot_runs
        plot_runs([trained], tmp_path / "file" / "runs.png")


def test_a_run_cut_short_before_its_first_evaluation_has_no_chart(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 3, "elapsed": 1.0, "val_loss": NaN}\n{"st')
    with pytest.raises(CharRNNError, match="holds no evaluation yet"):
        read_curves(tmp_path)

