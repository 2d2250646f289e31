"""`keras-dynhp sweep`: the grid, the executor of one machine, resuming, retries, outputs (#30)."""

import os

import numpy as np
import pytest

from keras_dynhp import cli
from keras_dynhp.cli import sweep
from keras_dynhp.cli._common import UsageError


def test_grid_is_the_product_of_the_listed_values_and_the_seeds():
    configurations = sweep.grid(["--model-budget", "50KB,100KB", "--hidden", "30,10/20", "--epochs=2",
                                 "--no-baseline"], [0, 1])
    assert len(configurations) == 2 * 2 * 2
    name, argv = configurations[1]
    assert name == "model_budget-50KB_hidden-30_10_seed-1"
    assert argv == ["--model-budget", "50KB", "--hidden", "30,10", "--epochs", "2", "--no-baseline",
                    "--seed", "1"]
    assert len({name for name, _ in configurations}) == len(configurations)


@pytest.mark.parametrize("argv, message", [
    (["--not-a-flag", "1"], "not a train flag"),
    (["--output", "x"], "set by the sweep"),
    (["--epochs"], "needs a value"),
])
def test_grid_refuses_what_train_does_not_take(argv, message):
    with pytest.raises(UsageError, match=message):
        sweep.grid(argv, [0])


def test_pareto_front_matches_brute_force():
    rng = np.random.default_rng(0)
    points = [tuple(p) for p in rng.integers(0, 6, (30, 2)).tolist()]
    front = set(sweep.pareto_front(points))
    for i, (x, y) in enumerate(points):
        beaten = any(x2 <= x and y2 <= y and (x2, y2) != (x, y) for x2, y2 in points)
        assert (i in front) == (not beaten)


def _run(argv, capsys):
    code = cli.main(["sweep", *argv])
    return code, capsys.readouterr()


def test_a_small_sweep_runs_in_processes_resumes_and_picks(tmp_path, capsys, fashion_subset):
    out = str(tmp_path / "sweep")
    argv = ["--subset", "300", "--epochs", "1", "--no-baseline", "--hidden", "30,10",
            "--model-budget", "50KB,100KB", "--jobs", "2", "--output", out, "--pick-under", "60KB"]
    code, printed = _run(argv, capsys)
    assert code == 0, printed.err
    assert "2 to run" in printed.out and "pick under 60,000 bytes: model_budget-50KB" in printed.out
    for name in ("model_budget-50KB_seed-0", "model_budget-100KB_seed-0"):
        assert os.path.exists(os.path.join(out, name, "summary.json"))
    rows = sweep.collect(out, ["model_budget-50KB_seed-0", "model_budget-100KB_seed-0"])
    assert [r["model_bytes"] <= budget for r, budget in zip(rows, (50_000, 100_000))] == [True, True]
    assert all(os.path.exists(os.path.join(out, f)) for f in ("sweep.csv", "sweep.md", "pareto.png"))
    code, printed = _run(argv, capsys)  # everything finished: nothing runs again
    assert code == 0 and "2 finished before, 0 to run" in printed.out


def test_a_failing_configuration_is_retried_once_and_reported(tmp_path, capsys):
    out = str(tmp_path / "sweep")
    code, printed = _run(["--data", str(tmp_path / "missing.npz"), "--epochs", "1", "--output", out,
                          "--jobs", "1"], capsys)
    assert code == 1
    assert "seed-0 failed (exit 1); retrying" in printed.out and "failed (exit 1) 2 times" in printed.out
    assert "no configuration finished" in printed.out
    assert "1 configuration(s) failed: seed-0" in printed.err


def test_each_process_gets_its_share_of_the_cores():
    executor = sweep.LocalProcesses(jobs=2)
    env = executor.environment()
    assert env["OMP_NUM_THREADS"] == str(max(1, (os.cpu_count() or 1) // 2))
    assert "intra_op_parallelism_threads" in env["XLA_FLAGS"]
    assert executor.jobs == 2


def test_the_executor_reports_a_killed_worker(tmp_path):
    import sys

    ends = {}
    tasks = [("ok", [sys.executable, "-c", "print('fine')"], None, str(tmp_path / "ok.log")),
             ("killed", [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"],
              None, str(tmp_path / "killed.log"))]
    sweep.LocalProcesses(jobs=2).run(tasks, lambda name, code: ends.__setitem__(name, code))
    assert ends == {"ok": 0, "killed": -9}  # cmd_sweep retries any non-zero end once
    assert (tmp_path / "ok.log").read_text().strip() == "fine"


def test_a_sweep_on_a_local_ray_instance_brings_the_runs_back(tmp_path, capsys, fashion_subset):
    ray = pytest.importorskip("ray")
    out = str(tmp_path / "sweep")
    argv = ["--subset", "300", "--epochs", "1", "--no-baseline", "--hidden", "30,10",
            "--model-budget", "50KB,100KB", "--jobs", "2", "--output", out, "--ray"]
    try:
        code, printed = _run(argv, capsys)
    finally:
        ray.shutdown()
    assert code == 0, printed.err
    assert "local Ray instance, 1 CPU(s) a task" in printed.out
    for name in ("model_budget-50KB_seed-0", "model_budget-100KB_seed-0"):
        assert os.path.exists(os.path.join(out, name, "summary.json"))  # sent back from the worker
        assert os.path.getsize(os.path.join(out, f"{name}.log")) > 0
    assert len(sweep.collect(out, ["model_budget-50KB_seed-0", "model_budget-100KB_seed-0"])) == 2
