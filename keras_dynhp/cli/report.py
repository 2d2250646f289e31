"""`keras-dynhp report`: the plots and summary table of a run directory, again."""

import os

from keras_dynhp.cli._common import PROG, UNITS_CHOICES, RunError, _read_json
from keras_dynhp.cli._output import _notes, write_plots, write_summary_md


def _report_arguments(r):
    r.add_argument("run_dir", metavar="RUN_DIR")
    r.add_argument("--units", choices=UNITS_CHOICES, default=None,
                   help="memory units of the table (default: those of the run)")


def cmd_report(args):
    run_dir = args.run_dir
    if not os.path.isdir(run_dir):
        raise RunError(f"{run_dir}: no such directory")
    history = _read_json(os.path.join(run_dir, "history.json"))
    summary = _read_json(os.path.join(run_dir, "summary.json"))
    if not isinstance(history, dict) or not isinstance(summary, dict) or not {
            "model", "baseline", "config"} <= set(summary):
        raise RunError(f"{run_dir}: history.json/summary.json are not those of `{PROG} train`")
    baseline_path = os.path.join(run_dir, "baseline_history.json")
    baseline = _read_json(baseline_path) if os.path.exists(baseline_path) else None
    units = args.units or summary["config"].get("units", "KiB")
    plots = write_plots(run_dir, history, summary["model"]["label"], baseline, summary.get("reference"))
    print(write_summary_md(run_dir, summary, units, history))
    print()
    print("\n".join(_notes(summary, history, units)))
    written = ["summary.md"] + [os.path.basename(p) for p in (plots or [])]
    print(f"\nwritten to {run_dir}: {', '.join(sorted(written))}")
    return 0
