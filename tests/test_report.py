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


def test_plots_are_written(tmp_path):
    units = tmp_path / "units.png"
    report.plot_units(HISTORY, units, title="units")
    runs = {"A": HISTORY, "B": {**HISTORY, "batch_size": [16, 16, 16]}}
    batch = tmp_path / "sub" / "batch.png"
    report.plot_runs(runs, "batch_size", batch, ylabel="batch size")
    mem = tmp_path / "mem.png"
    report.plot_runs(runs, "memory_total_bytes", mem, scale=1 / 1024, logy=True)
    for path in (units, batch, mem):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_units_starts_from_the_initial_widths(tmp_path):
    history = {**HISTORY, "pruned_0": [84, 50, 50], "pruned_1": [20, 20, 10], "pruned_2": [0, 1, 1]}
    path = report.plot_units(history, tmp_path / "units.png")
    assert (tmp_path / "units.png").read_bytes()[:4] == b"\x89PNG" and path == tmp_path / "units.png"
