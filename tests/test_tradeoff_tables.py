"""The reproduction page's tables of issue #25 are what benchmarks/tradeoff_variants.py renders.

The raw results (one JSON file per run) are committed in benchmarks/results/tradeoff/;
a new run updates the page by `python benchmarks/tradeoff_variants.py --table`, never by hand.
"""

import importlib.util
import json
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results", "tradeoff")


def _script():
    spec = importlib.util.spec_from_file_location("tradeoff_variants",
                                                  os.path.join(ROOT, "benchmarks", "tradeoff_variants.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("epochs", [30, 100])
def test_each_table_on_the_page_is_the_scripts_render(epochs):
    page = open(os.path.join(ROOT, "docs", "reproduction.md")).read()
    rendered = _script().table(RESULTS, epochs)
    assert rendered.count("\n") >= 3, "no results for this table"
    assert rendered in page, f"docs/reproduction.md's {epochs}-epoch table is not the script's render"


def test_every_result_records_its_settings_and_a_test_error_taken_once():
    names = [n for n in os.listdir(RESULTS) if n.endswith(".json")]
    assert names
    for name in names:
        record = json.load(open(os.path.join(RESULTS, name)))
        h = record["history"]
        assert record["validation"] == 5000 and "val_accuracy" in h and len(h["val_accuracy"]) == record["epochs"]
        assert 0 < record["test_error_pct"] < 100
        assert record["variant"] in _script().VARIANTS, name
        assert sum(h["mo_bytes"]) == record["training_bytes"]


def test_the_targets_table_on_the_page_is_the_scripts_render():
    page = open(os.path.join(ROOT, "docs", "reproduction.md")).read()
    rendered = _script().targets_table(RESULTS)
    assert rendered.count("\n") >= 3, "no 100-epoch results through the defaults"
    assert rendered in page, "docs/reproduction.md's targets table is not the script's render"


def test_the_trade_off_figure_is_drawn_from_the_results(tmp_path):
    points = _script().figure(RESULTS, str(tmp_path / "tradeoff.png"), epochs=30)
    assert (tmp_path / "tradeoff.png").read_bytes()[:4] == b"\x89PNG"
    for dataset, rows in points.items():
        sizes = [row[0] for row in rows]
        assert sizes == sorted(sizes) and len(rows) >= 2, dataset
