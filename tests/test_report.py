"""Plots and tables of keras_dynhp.experiments.report on known inputs."""

import pytest

from keras_dynhp import memory
from keras_dynhp.experiments import report

HISTORY = {
    "units_0": [784, 700, 650], "units_1": [300, 280, 270], "units_2": [100, 99, 98],
    "memory_total_bytes": [1.0e6, 2.0e6, 2.9e6], "batch_size": [16, 18, 21],
    "val_accuracy": [0.8, 0.85, 0.86],
}


def test_markdown_table_known_output():
    rows = [{"a": 1234, "b": 0.5, "c": "x|y"}, {"a": 5, "b": None, "c": "z"}]
    text = report.markdown_table(rows, ["a", "b", "c"], headers=["A", "B", "C"], intfmt=",")
    assert text.splitlines() == [
        "| A | B | C |",
        "|---|---|---|",
        "| 1,234 | 0.50 | x\\|y |",
        "| 5 | - | z |",
    ]
    with pytest.raises(ValueError, match="headers"):
        report.markdown_table(rows, ["a", "b"], headers=["A"])


def test_paper_table_changes_and_units():
    ref = {"label": "SP", "error_pct": 10.0, "params": 266_610, "training_bytes": 2000 * 2_672_072}
    dyn = {"label": "DynHP", "error_pct": 9.5, "params": 33_326, "training_bytes": 1000 * 2_672_072}
    text = report.paper_table([ref, dyn], units="paper")
    lines = text.splitlines()
    assert len(lines) == 4
    # The paper's units: model KiB/1000 and training memory KiB/1e6 (memory module).
    assert f"{memory.paper_mbytes(memory.network_bytes(266_610)):.3f}" in lines[2]
    assert f"{memory.paper_training_mbytes(2000 * 2_672_072):.3f}" in lines[2]
    assert "9.50 (-5.0%)" in lines[3]
    assert "(-50.0%)" in lines[3]  # training memory halved
    assert "(-87.5%)" in lines[3]  # model size 1/8


@pytest.fixture
def figures(monkeypatch):
    """The figures the plots save (their data is what a plot test checks), in order."""
    saved = []
    save = report._save

    def keep(fig, path):
        saved.append(fig)
        return save(fig, path)

    monkeypatch.setattr(report, "_save", keep)
    return saved


def _lines(fig):
    """{label: (xs, ys)} of the figure's plotted lines."""
    ax = fig.axes[0]
    return {line.get_label(): (list(line.get_xdata()), [float(v) for v in line.get_ydata()])
            for line in ax.get_lines()}


def test_plots_are_written_with_the_series_they_are_for(tmp_path, figures):
    units = tmp_path / "units.png"
    report.plot_units(HISTORY, units, title="units")
    runs = {"A": HISTORY, "B": {**HISTORY, "batch_size": [16, 16, 16]}}
    batch = tmp_path / "sub" / "batch.png"
    report.plot_runs(runs, "batch_size", batch, ylabel="batch size", lines={"cap": 20})
    mem = tmp_path / "mem.png"
    report.plot_runs(runs, "memory_total_bytes", mem, scale=1 / 1024, logy=True)
    err = tmp_path / "err.png"
    report.plot_runs({"A": HISTORY}, "val_error", err, scale=100)
    for path in (units, batch, mem, err):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines = _lines(figures[0])  # one line per gated layer, epochs 1-3 (no pruned_* keys: no epoch 0)
    assert lines["input features (784 -> 650)"] == ([1, 2, 3], [784.0, 700.0, 650.0])
    assert lines["hidden layer 2 (100 -> 98)"][1] == [100.0, 99.0, 98.0]
    lines = _lines(figures[1])
    assert lines["A"][1] == [16.0, 18.0, 21.0] and lines["B"][1] == [16.0, 16.0, 16.0]
    assert lines["cap"][1] == [20.0, 20.0]  # the horizontal line, in the plot's units
    assert figures[1].axes[0].get_ylabel() == "batch size"
    lines = _lines(figures[2])
    assert lines["A"][1] == pytest.approx([1.0e6 / 1024, 2.0e6 / 1024, 2.9e6 / 1024])
    assert figures[2].axes[0].get_yscale() == "log"
    assert _lines(figures[3])["A"][1] == pytest.approx([20.0, 15.0, 14.0])  # errors from accuracies, in %


def test_plot_units_starts_from_the_initial_widths(tmp_path, figures):
    history = {**HISTORY, "pruned_0": [84, 50, 50], "pruned_1": [20, 20, 10], "pruned_2": [0, 1, 1]}
    path = report.plot_units(history, tmp_path / "units.png")
    assert (tmp_path / "units.png").read_bytes()[:4] == b"\x89PNG" and path == tmp_path / "units.png"
    lines = _lines(figures[0])
    assert lines["input features (868 -> 650)"] == ([0, 1, 2, 3], [868.0, 784.0, 700.0, 650.0])
    assert lines["hidden layer 1 (320 -> 270)"][1][0] == 320.0
    assert figures[0].axes[0].get_xlabel() == "epoch (0: before training)"
