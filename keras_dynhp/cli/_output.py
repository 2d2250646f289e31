"""What `train` and `report` write about a run: plots, the summary table and its notes."""

import os

from keras_dynhp.cli._common import PROG, _warn


def write_plots(run_dir, history, label, baseline_history=None, baseline_label=None):
    """units.png, memory.png, error.png, batch_size.png, memory_per_epoch.png (against the
    DynHP budget) and model_size.png (against the model budget); returns the files written.

    Without matplotlib, warns and returns [] (the rest of the run is kept).
    """
    from keras_dynhp.experiments import report

    runs = {label: history}
    if baseline_history:
        runs[baseline_label or "dense baseline"] = baseline_history

    def path(name):
        return os.path.join(run_dir, name)

    try:
        written = [report.plot_units(history, path("units.png"), title=f"{label}: active units per layer")]
        written.append(report.plot_runs(
            runs, "memory_total_bytes", path("memory.png"), scale=1 / 1024,
            ylabel="training memory so far (KiB, paper accounting)", title="Training memory"))
        if any(report.series(h, "val_error") for h in runs.values()):
            written.append(report.plot_runs(
                runs, "val_error", path("error.png"), scale=100, ylabel="test error (%)",
                title="Test error at each epoch end (before that epoch's pruning)"))
        budget = (history.get("budget_bytes") or [None])[-1]
        batch_runs = dict(runs)
        if budget and report.series(history, "network_bytes") and history.get("batch_size"):
            # eq. 10's cap after each epoch's surgery (the most the next epoch may use)
            per_example = history["batch_bytes"][0] / history["batch_size"][0]
            batch_runs["cap for the next epoch"] = {"batch_size": [
                int((b - n) // per_example)
                for b, n in zip(history["budget_bytes"], history["network_bytes"])]}
        written.append(report.plot_runs(batch_runs, "batch_size", path("batch_size.png"),
                                        ylabel="batch size", title="Batch size and its cap"))
        if report.series(history, "mo_bytes"):  # the one thing DynHP promises: under the budget line
            memory_runs = {f"{label}, paper accounting": {"mo_bytes": history["mo_bytes"]}}
            if report.series(history, "full_bytes"):
                memory_runs[f"{label}, full accounting"] = {"mo_bytes": history["full_bytes"]}
            written.append(report.plot_runs(
                memory_runs, "mo_bytes", path("memory_per_epoch.png"), scale=1 / 1024,
                ylabel="memory of the epoch (KiB)",
                title="Memory per epoch", lines={f"budget {budget / 1024:.1f} KiB": budget} if budget else None))
        model_budget = (history.get("model_budget_bytes") or [None])[-1]
        if report.series(history, "delivered_bytes"):
            written.append(report.plot_runs(
                {label: history}, "delivered_bytes", path("model_size.png"), scale=1 / 1000,
                ylabel="compact model after the epoch (KB)", title="Model size",
                lines={f"model budget {model_budget / 1000:.1f} KB": model_budget} if model_budget else None))
    except ImportError as e:
        _warn(f"plots skipped: {e}")
        return []
    return written


def _table(summary, units):
    from keras_dynhp.experiments import report

    runs = [summary["baseline"], summary["model"]]
    reference = summary.get("reference")
    if reference is not None and reference not in [r["label"] for r in runs]:
        reference = None
    return report.paper_table(runs, reference=reference, units=units)


def _size(nbytes, units):
    """Bytes in the summary table's unit: KiB, or the paper's "MBytes" (KiB / 1000)."""
    from keras_dynhp import memory

    if units == "paper":
        return f"{memory.paper_mbytes(nbytes):.3f} MBytes"
    return f"{nbytes / 1024:.1f} KiB"


def _notes(summary, history, units="KiB"):
    model = summary["model"]
    cfg = summary["config"]
    seconds = model.get("seconds")
    if seconds is None:  # summary.json of an older version
        seconds = summary.get("seconds", {}).get("train", 0.0)
    batch_sizes = [int(b) for b in (history or {}).get("batch_size", [])]
    lines = [
        f"- {model['label']}: architecture {model['architecture']}, batch sizes {batch_sizes}"
        + (f", budget {model['budget_bytes'] / 1024:.2f} KiB" if model.get("budget_bytes") else ""),
        (f"- trained on {summary['train_examples']:,} {cfg['dataset']} images for {cfg['epochs']} "
         f"epochs in {seconds:.0f} s; test error on {summary['test_examples']:,} "
         "test images, after the last pruning"),
    ]
    if model.get("model_budget_bytes"):
        delivered = model.get("delivered_bytes") or model["model_bytes"]
        budget = model["model_budget_bytes"]
        lines.append(
            f"- model budget {budget:,} bytes ({budget / 1000:.1f} KB, KB = 1000 bytes; "
            f"{_size(budget, units)} in the table's unit; 4 bytes per weight and bias): the compact model "
            f"stores {_size(delivered, units)}" + (" (met)" if delivered <= budget else " (NOT met)"))
    baseline = summary.get("baseline") or {}
    if baseline.get("architecture"):
        lines.append(
            f"- {baseline['label']}: "
            + (f"your Keras model {cfg['user_model']}, widths {baseline['architecture']}" if cfg.get("user_model")
               else f"a dense Keras {'LeNet-5' if cfg.get('arch') == 'lenet5' else 'MLP'} {baseline['architecture']}")
            + " (no gates, no pruning), "
            f"batch {baseline['final_batch_size']}"
            + (f", test error {baseline['error_pct']:.2f}%" if baseline.get("error_pct") is not None
               else ": not trained, its size and memory in the paper's accounting only"))
    if model.get("tflite_test_accuracy") is not None:
        lines.append(
            f"- model.tflite ({cfg['quantization']}, {model['tflite_bytes']:,} bytes): LiteRT test accuracy "
            f"{100 * model['tflite_test_accuracy']:.2f}% vs Keras {100 * model['test_accuracy']:.2f}%")
    lines.append("- memory in the paper's accounting: 4 bytes per stored weight/bias (model size), "
                 "summed with one input batch over epochs (training memory); changes are relative "
                 f"to the reference ({summary.get('reference') or 'none'})")
    if summary.get("peak_rss_bytes"):
        lines.append(f"- peak RSS of the training process: {summary['peak_rss_bytes'] / 2**20:.0f} MiB "
                     "(real memory, not the paper's accounting)")
    return lines


def write_summary_md(run_dir, summary, units, history=None):
    """summary.md (command, table, notes); returns the table."""
    from keras_dynhp._io import write_bytes

    table = _table(summary, units)
    text = [f"# {PROG} {summary['config']['mode']} on {summary['config']['dataset']}", ""]
    if summary.get("command"):
        text += ["    " + summary["command"], ""]
    text += [table, ""] + _notes(summary, history, units) + [""]
    write_bytes(os.path.join(run_dir, "summary.md"), "\n".join(text).encode())
    return table
