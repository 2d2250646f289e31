"""Wall time of one 4-configuration sweep: --jobs 1, --jobs 2 and a local Ray instance, interleaved (#30).

Each round runs the same sweep (Fashion-MNIST, DynHP, four model budgets, no baseline) once
per executor, each into a fresh directory, in an order that rotates from round to round;
the figures are the medians over the rounds, the ratios against --jobs 1, and Ray's
overhead per configuration against --jobs 2 (the same parallelism).

    python benchmarks/bench_sweep.py --rounds 2 --epochs 2 --subset 10000
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

EXECUTORS = {"jobs1": ["--jobs", "1"], "jobs2": ["--jobs", "2"], "ray": ["--jobs", "2", "--ray"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--subset", type=int, default=10000)
    parser.add_argument("--backend", default="jax")
    parser.add_argument("--output", default="benchmarks/results/bench_sweep.json")
    parser.add_argument("--keep", metavar="DIR", help="keep the last --jobs 2 sweep here (its table and figure)")
    args = parser.parse_args()
    budgets = "25KB,50KB,100KB,200KB"
    flags = ["--dataset", "fashion_mnist", "--mode", "dynhp", "--epochs", str(args.epochs), "--subset",
             str(args.subset), "--no-baseline", "--model-budget", budgets]
    times = {name: [] for name in EXECUTORS}
    names = list(EXECUTORS)
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            out = tempfile.mkdtemp(prefix=f"sweep_{name}_")
            command = [sys.executable, "-m", "keras_dynhp", "--backend", args.backend, "sweep", *flags,
                       *EXECUTORS[name], "--output", out]
            start = time.perf_counter()
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
            times[name].append(time.perf_counter() - start)
            print(f"round {r + 1} {name}: {times[name][-1]:.1f} s", flush=True)
            if args.keep and name == "jobs2":
                shutil.rmtree(args.keep, ignore_errors=True)
                shutil.copytree(out, args.keep)
            shutil.rmtree(out, ignore_errors=True)
    median = {name: statistics.median(t) for name, t in times.items()}
    result = {"configurations": 4, "epochs": args.epochs, "subset": args.subset, "backend": args.backend,
              "cores": os.cpu_count(), "seconds": times, "median_seconds": median,
              "ratio_vs_jobs1": {name: median[name] / median["jobs1"] for name in median},
              "ray_overhead_per_configuration_s": (median["ray"] - median["jobs2"]) / 4}
    os.makedirs(os.path.dirname(args.output) or ".", exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(result, f, indent=1)
    for name in EXECUTORS:
        print(f"{name}: median {median[name]:.1f} s, {result['ratio_vs_jobs1'][name]:.2f}x --jobs 1")
    print(f"Ray's overhead per configuration against --jobs 2: {result['ray_overhead_per_configuration_s']:.1f} s")


if __name__ == "__main__":
    main()
