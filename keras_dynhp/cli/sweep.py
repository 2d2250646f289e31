"""`keras-dynhp sweep`: `train` over a grid of flags, one process per configuration (#30).

Every `train` flag may be given a list of values (commas; `/` between whole values of
`--hidden` and `--lambda`, whose values hold commas themselves), and `--seeds` a list of
seeds; the grid is their product. Each configuration is a `train` run of its own in
`OUTPUT/<name>` (so `--resume`, the run files and `evaluate` work as for one run),
started as a separate process by an *executor*: :class:`LocalProcesses` runs `--jobs` of
them at once on this machine, the threads of each set so that they do not fight over the
cores. A finished configuration (its `summary.json` written) is skipped on a re-run; an
interrupted one resumes from its last saved epoch; one that fails is retried once
(resuming) and then reported. The outputs, in `OUTPUT/`: `sweep.csv` and `sweep.md`
(every configuration), `pareto.png` (test error against model size and against training
memory, the front highlighted, mean and spread over seeds) and, with `--pick-under SIZE`,
the configuration with the lowest mean test error among those that deliver at most SIZE.
"""

import itertools
import json
import os
import subprocess
import sys
import time

from keras_dynhp.cli._common import PROG, RunError, UsageError, _budget, _makedirs, _positive_int

#: Flags whose single value already holds commas: their list of values is separated by "/".
SLASH_LISTS = ("--hidden", "--lambda")
#: Flags a sweep sets itself for every configuration.
OWN_FLAGS = ("--output", "--resume", "--overwrite", "--seed")


def _sweep_arguments(p):
    p.add_argument("--seeds", default="0", metavar="S[,S...]", help="seeds (default 0)")
    p.add_argument("--jobs", type=_positive_int, default=os.cpu_count() or 1,
                   help="configurations run at once, each a process (default: the number of cores)")
    p.add_argument("--output", default="runs/sweep", metavar="DIR",
                   help="one sub-directory per configuration, and the sweep's table and figure "
                        "(default runs/sweep)")
    p.add_argument("--pick-under", type=_budget, default=None, metavar="SIZE",
                   help="print the configuration of lowest mean test error among those delivering at "
                        "most SIZE (bytes, or e.g. 100KB)")
    p.add_argument("--retries", type=int, default=1, help="times a failed configuration is retried (default 1)")
    p.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="run each configuration as a Ray task: without ADDRESS on a local Ray instance, "
                        "'auto' on the cluster this machine belongs to (`ray start`), or at ADDRESS "
                        "(ray.init(address=...)); each task asks for cores/--jobs CPUs "
                        "(needs keras_dynhp[ray])")
    p.epilog = ("Any other flag is a train flag, with one value or a list of values: commas between "
                "values (e.g. --model-budget 50KB,100KB), '/' between values of --hidden and --lambda "
                "(e.g. --hidden 300,100/500,300).")


def _sweep_parser():
    from keras_dynhp.cli._common import _Parser

    parser = _Parser(prog=f"{PROG} sweep", add_help=False)
    _sweep_arguments(parser)
    return parser


def grid(train_argv, seeds):
    """The configurations of a sweep: `[(name, train argv)]`, one per combination of the listed values.

    Args:
        train_argv: `train` flags, a value being one value or a list (see the module docstring).
        seeds: The seeds (each configuration runs once per seed).

    Returns:
        The configurations, named after the values that vary (`model_budget-50KB_seed-0`).

    Raises:
        UsageError: For a flag `train` does not know, or one a sweep sets itself.

    Example:
        >>> [name for name, _ in grid(["--model-budget", "50KB,100KB", "--epochs", "2"], [0])]
        ['model_budget-50KB_seed-0', 'model_budget-100KB_seed-0']
    """
    from keras_dynhp.cli import build_parser

    options = build_parser(command="train")._option_string_actions
    pairs, i = [], 0
    while i < len(train_argv):
        flag = train_argv[i]
        name = flag.split("=", 1)[0]
        if name not in options:
            raise UsageError(f"sweep: {flag!r} is not a train flag (see `{PROG} train --help`)")
        if name in OWN_FLAGS:
            raise UsageError(f"sweep: {name} is set by the sweep for each configuration (use --seeds, and the "
                             "sweep's --output)")
        action = options[name]
        if "=" in flag:
            value, i = flag.split("=", 1)[1], i + 1
        elif action.nargs == 0:
            pairs.append((name, [None]))
            i += 1
            continue
        elif i + 1 < len(train_argv):
            value, i = train_argv[i + 1], i + 2
        else:
            raise UsageError(f"sweep: {name} needs a value")
        values = [v for v in value.split("/" if name in SLASH_LISTS else ",") if v != ""]
        if not values:
            raise UsageError(f"sweep: {name} needs a value")
        pairs.append((name, values))
    pairs.append(("--seed", [str(s) for s in seeds]))
    configurations = []
    for combination in itertools.product(*(values for _, values in pairs)):
        argv, label = [], []
        for (flag, values), value in zip(pairs, combination):
            argv += [flag] if value is None else [flag, value]
            if len(values) > 1 or flag == "--seed":
                label.append(f"{flag[2:].replace('-', '_')}-{value.replace('/', '_').replace(',', '_')}")
        configurations.append(("_".join(label), argv))
    return configurations


def train_command(argv, directory, backend):
    """The `train` process of one configuration, writing to `directory` (resuming a run started there)."""
    command = [sys.executable, "-m", "keras_dynhp", "--backend", backend, "train", *argv,
               "--output", directory, "--quiet"]
    if os.path.exists(os.path.join(directory, "run.json")):
        command += ["--resume", directory]
    return command


def thread_environment(threads):
    """The environment of a `train` process limited to `threads` threads (TensorFlow, XLA, OpenMP)."""
    env = dict(os.environ)
    n = str(int(threads))
    env.update(OMP_NUM_THREADS=n, TF_NUM_INTRAOP_THREADS=n, TF_NUM_INTEROP_THREADS="1")
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false "
                        f"intra_op_parallelism_threads={n}").strip()
    return env


class LocalProcesses:
    """The executor of one machine: at most `jobs` configurations at once, each a `train` process.

    Each process gets `cores // jobs` threads (TensorFlow's and XLA's intra-op pools, OpenMP),
    so that N jobs share the cores instead of each taking them all.

    An executor's `run(tasks, on_done)` runs `(name, train argv, run directory, log path)`
    tasks and calls `on_done(name, exit status)` as each ends (in the driver's thread);
    :class:`RayTasks` is the other one.
    """

    def __init__(self, jobs, backend="auto"):
        self.jobs = max(1, int(jobs))
        self.threads = max(1, (os.cpu_count() or 1) // self.jobs)
        self.backend = backend

    def environment(self):
        return thread_environment(self.threads)

    def describe(self):
        return f"{self.jobs} at a time, {self.threads} thread(s) each"

    def run(self, tasks, on_done):
        """Runs `tasks`, calling `on_done(name, returncode)` as each ends."""
        pending, running = list(tasks), {}
        env = self.environment()
        try:
            while pending or running:
                while pending and len(running) < self.jobs:
                    name, argv, directory, log = pending.pop(0)
                    command = argv if directory is None else train_command(argv, directory, self.backend)
                    with open(log, "ab") as out:
                        running[name] = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
                for name, process in list(running.items()):
                    code = process.poll()
                    if code is not None:
                        del running[name]
                        on_done(name, code)
                time.sleep(0.2)
        except BaseException:
            for process in running.values():
                process.terminate()
            for process in running.values():
                process.wait()
            raise


def _run_on_worker(argv, backend, threads, files):
    """A Ray task: one configuration's `train` on whichever machine Ray chose.

    The run directory travels as a tar archive: `files` (a run started before, to resume)
    is unpacked into a temporary directory, `train` runs there, and the directory and the
    log come back to the driver, which needs no file system shared with the workers.

    Returns:
        `(exit status, tar archive of the run directory, log bytes)`.
    """
    import io
    import tarfile
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        directory = os.path.join(tmp, "run")
        os.makedirs(directory)
        if files:
            with tarfile.open(fileobj=io.BytesIO(files)) as archive:
                archive.extractall(directory, filter="data")
        log = os.path.join(tmp, "log")
        with open(log, "wb") as out:
            code = subprocess.call(train_command(argv, directory, backend), stdout=out,
                                   stderr=subprocess.STDOUT, env=thread_environment(threads))
        packed = io.BytesIO()
        with tarfile.open(fileobj=packed, mode="w") as archive:
            for entry in sorted(os.listdir(directory)):
                archive.add(os.path.join(directory, entry), arcname=entry)
        with open(log, "rb") as f:
            return code, packed.getvalue(), f.read()


class RayTasks:
    """The executor of a Ray cluster: each configuration a Ray task asking for `cpus` CPUs.

    `address` None starts a local Ray instance (`ray.init(num_cpus=cores)`); otherwise it is
    passed to `ray.init(address=...)` ("auto": the cluster this machine belongs to, started
    with `ray start`). Run directories go to the workers and come back as archives
    (:func:`_run_on_worker`), so the driver's `--output` is the only place they live. A task
    whose worker dies ends with status -1 (retried by the sweep like any failure).
    """

    def __init__(self, address=None, cpus=1, backend="auto"):
        try:
            import ray  # noqa: F401
        except ImportError:
            raise UsageError("--ray needs Ray: pip install 'keras_dynhp[ray]'") from None
        self.address, self.cpus, self.backend = address, max(1, int(cpus)), backend

    def describe(self):
        where = "a local Ray instance" if self.address is None else f"the Ray cluster at {self.address}"
        return f"on {where}, {self.cpus} CPU(s) a task"

    def run(self, tasks, on_done):
        import io
        import shutil
        import tarfile

        import ray

        if not ray.is_initialized():
            if self.address is None:
                ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, log_to_driver=False)
            else:
                ray.init(address=self.address, log_to_driver=False)
        remote = ray.remote(num_cpus=self.cpus, max_retries=0)(_run_on_worker)
        refs = {}
        for name, argv, directory, log in tasks:
            refs[remote.remote(argv, self.backend, self.cpus, _packed(directory))] = (name, directory, log)
        try:
            while refs:
                done, _ = ray.wait(list(refs), num_returns=1)
                name, directory, log = refs.pop(done[0])
                try:
                    code, files, text = ray.get(done[0])
                except ray.exceptions.RayError as e:  # the worker died, or Ray lost the task
                    with open(log, "ab") as out:
                        out.write(f"Ray: {type(e).__name__}: {e}\n".encode())
                    on_done(name, -1)
                    continue
                shutil.rmtree(directory, ignore_errors=True)
                os.makedirs(directory)
                with tarfile.open(fileobj=io.BytesIO(files)) as archive:
                    archive.extractall(directory, filter="data")
                with open(log, "ab") as out:
                    out.write(text)
                on_done(name, code)
        except BaseException:
            for ref in refs:
                ray.cancel(ref, force=True)
            raise


def _packed(directory):
    """A tar archive of a run directory started before (None: nothing there)."""
    import io
    import tarfile

    if not os.path.exists(os.path.join(directory, "run.json")):
        return None
    packed = io.BytesIO()
    with tarfile.open(fileobj=packed, mode="w") as archive:
        for entry in sorted(os.listdir(directory)):
            archive.add(os.path.join(directory, entry), arcname=entry)
    return packed.getvalue()


def cmd_sweep(args):
    own, rest = _sweep_parser().parse_known_args(args.argv)
    train_argv = [t for t in rest if t != "--"]
    try:
        seeds = [int(s) for s in own.seeds.split(",") if s != ""]
    except ValueError:
        raise UsageError(f"--seeds: expected integers separated by commas; received {own.seeds!r}") from None
    if not seeds or any(s < 0 for s in seeds):
        raise UsageError(f"--seeds: expected integers >= 0; received {own.seeds!r}")
    configurations = grid(train_argv, seeds)
    from keras_dynhp.cli import build_parser

    checker = build_parser(command="train")
    for name, argv in configurations:  # every configuration's flags, checked before anything runs
        try:
            checker.parse_args(argv)
        except SystemExit:
            raise UsageError(f"sweep: configuration {name} has flags train refuses (see the line above)") from None
    _makedirs(own.output, "--output")
    if own.ray is None:
        executor = LocalProcesses(own.jobs, args.backend)
    else:
        executor = RayTasks(None if own.ray == "local" else own.ray,
                            cpus=max(1, (os.cpu_count() or 1) // own.jobs), backend=args.backend)
    attempts, failed, skipped, tasks = {}, [], [], []
    by_name = {}
    for name, argv in configurations:
        directory = os.path.join(own.output, name)
        if os.path.exists(os.path.join(directory, "summary.json")):
            skipped.append(name)
            continue
        by_name[name] = (name, argv, directory, os.path.join(own.output, f"{name}.log"))
        tasks.append(by_name[name])
    print(f"sweep: {len(configurations)} configurations ({len(skipped)} finished before, {len(tasks)} to run), "
          f"{executor.describe()}; logs in {own.output}/<name>.log", flush=True)
    started = time.perf_counter()

    def on_done(name, code):
        attempts[name] = attempts.get(name, 0) + 1
        if code == 0:
            print(f"  done {name} ({time.perf_counter() - started:.0f} s)", flush=True)
            return
        if attempts[name] <= own.retries:
            print(f"  {name} failed (exit {code}); retrying", flush=True)
            retry.append(by_name[name])
            return
        print(f"  {name} failed (exit {code}) {attempts[name]} times: see {own.output}/{name}.log", flush=True)
        failed.append(name)

    retry = []
    executor.run(tasks, on_done)
    while retry:
        again, retry[:] = list(retry), []
        executor.run(again, on_done)
    rows = collect(own.output, [name for name, _ in configurations])
    write_outputs(own.output, rows)
    print(markdown(rows) if rows else "no configuration finished")
    if own.pick_under is not None:
        print(pick_under(rows, own.pick_under))
    if failed:
        raise RunError(f"{len(failed)} configuration(s) failed: {', '.join(failed)}")
    return 0


def collect(output, names):
    """One row per finished configuration: its flags and the figures of its `summary.json`."""
    rows = []
    for name in names:
        path = os.path.join(output, name, "summary.json")
        if not os.path.exists(path):
            continue
        with open(path) as f:
            summary = json.load(f)
        model, config = summary["model"], summary["config"]
        group = "_".join(part for part in name.split("_") if not part.startswith("seed-")) or "all"
        rows.append({"name": name, "group": group, "seed": config.get("seed"),
                     "test_error_pct": model["error_pct"], "model_bytes": model["model_bytes"],
                     "training_bytes": model["training_bytes"], "final_batch_size": model.get("final_batch_size"),
                     "seconds": model.get("seconds")})
    return rows


def _groups(rows):
    """Per configuration without its seed: `(group, mean error, spread, mean size, mean training memory, n)`."""
    import numpy as np

    out = []
    for group in dict.fromkeys(r["group"] for r in rows):
        mine = [r for r in rows if r["group"] == group]
        errors = [r["test_error_pct"] for r in mine]
        out.append((group, float(np.mean(errors)), float(max(errors) - min(errors)),
                    float(np.mean([r["model_bytes"] for r in mine])),
                    float(np.mean([r["training_bytes"] for r in mine])), len(mine)))
    return out


def pareto_front(points):
    """Indices of the points no other point beats on both coordinates (lower is better for both)."""
    front = []
    for i, (x, y) in enumerate(points):
        if not any((x2 <= x and y2 <= y) and (x2 < x or y2 < y) for j, (x2, y2) in enumerate(points) if j != i):
            front.append(i)
    return front


def markdown(rows):
    """The Markdown table of a sweep: one row per configuration, mean and spread over its seeds."""
    groups = _groups(rows)
    front = set(pareto_front([(g[3], g[1]) for g in groups]))
    header = ("| configuration | seeds | test error % (mean, spread) | model bytes | training memory (MiB) "
              "| on the size front |")
    lines = [header, "|---|---:|---:|---:|---:|:---:|"]
    for k, (group, error, spread, size, memory, n) in enumerate(groups):
        lines.append(f"| {group} | {n} | {error:.2f} ({spread:.2f}) | {size:,.0f} | {memory / 2**20:.1f} "
                     f"| {'yes' if k in front else ''} |")
    return "\n".join(lines)


def pick_under(rows, max_bytes):
    """The line naming the configuration of lowest mean test error that delivers at most `max_bytes`."""
    fitting = [g for g in _groups(rows) if g[3] <= max_bytes]
    if not fitting:
        return f"pick under {max_bytes:,} bytes: no configuration delivers a model that small"
    best = min(fitting, key=lambda g: g[1])
    return (f"pick under {max_bytes:,} bytes: {best[0]} (test error {best[1]:.2f} % mean over {best[5]} "
            f"seed(s), {best[3]:,.0f} bytes)")


def write_outputs(output, rows):
    """`sweep.csv`, `sweep.md` and `pareto.png` in `output`."""
    from keras_dynhp._io import write_bytes, write_csv

    write_csv(os.path.join(output, "sweep.csv"), rows)
    write_bytes(os.path.join(output, "sweep.md"), (markdown(rows) + "\n").encode())
    if rows:
        _figure(os.path.join(output, "pareto.png"), _groups(rows))


def _figure(path, groups):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4))
    FigureCanvasAgg(fig)
    for k, (x_index, label) in enumerate(((3, "model size (KB)"), (4, "training memory (MiB)"))):
        ax = fig.add_subplot(1, 2, k + 1)
        scale = 1000.0 if x_index == 3 else 2**20
        xs = [g[x_index] / scale for g in groups]
        ys = [g[1] for g in groups]
        spread = [g[2] / 2 for g in groups]
        ax.errorbar(xs, ys, yerr=spread, fmt="o", color="grey", alpha=0.6, label="configurations (mean, spread)")
        front = sorted(pareto_front(list(zip(xs, ys))), key=lambda i: xs[i])
        ax.plot([xs[i] for i in front], [ys[i] for i in front], "o-", color="C0", label="front")
        ax.set_xlabel(label)
        ax.set_ylabel("test error %")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
