"""`keras-dynhp reproduce`: the paper's grid (:mod:`keras_dynhp.experiments.reproduce`)."""

import argparse
import math
import os
import time

from keras_dynhp.cli._common import (
    DATASET_CHOICES,
    PROFILE_CHOICES,
    RunError,
    UsageError,
    _budget_rule,
    _float_in,
    _lambdas,
    _lines,
    _makedirs,
    _non_negative_int,
    _positive_int,
)


def _reproduce_arguments(p):
    p.add_argument("--profile", choices=PROFILE_CHOICES, default="quick",
                   help="paper: both datasets, SP/HP at batch 16-512, the paper's alpha_bs grids, "
                        "2000 epochs (days on a CPU); quick: both datasets, 3 SP, 2 HP, 2 DynHP runs "
                        "each, 20 epochs (about an hour per dataset on 2 cores); compress100: SP, "
                        "HP, DynHP and DynHP with a model budget, size penalty, 100 epochs (hours "
                        "on 2 cores); compress30: SP and DynHP with a model budget at the paper's "
                        "sizes through the library's defaults, 30 epochs, validated on the last "
                        "5,000 training images (about 15 minutes on 2 cores); tiny: a smoke test "
                        "(default quick)")
    p.add_argument("--output", default="runs/reproduce", metavar="DIR",
                   help="output directory; re-running resumes it (default runs/reproduce)")
    p.add_argument("--datasets", nargs="+", choices=DATASET_CHOICES, default=None, metavar="NAME",
                   help="restrict to these datasets (default: the profile's)")
    p.add_argument("--epochs", type=_positive_int, default=None,
                   help="override the profile's epochs (paper 2000, quick 20, tiny 2)")
    p.add_argument("--lambda", dest="l0_lambda", type=_lambdas, default=None, metavar="L[,L...]",
                   help="L0 strength: one value or one per gated layer (default: the profile's; "
                        "0.01, the paper's, except compress100 and compress30: 0.001 with the size "
                        "penalty)")
    p.add_argument("--gamma", type=_float_in(0, 1), default=0.5,
                   help="hard-pruning threshold (default 0.5)")
    p.add_argument("--learning-rate", type=_float_in(0, math.inf, low_open=True, high_open=True),
                   default=1e-3, help="Adam learning rate (default 1e-3)")
    p.add_argument("--budget", type=_budget_rule, default="best-sp", metavar="RULE",
                   help='DynHP budget: "best-sp" (per-epoch memory of the SP run with the lowest '
                        'test error, the paper\'s rule, or validation error for compress30; default), '
                        '"paper" (MNIST SP bs 512, Fashion-MNIST SP bs 128) or a size such as 1433KiB')
    p.add_argument("--peers", action=argparse.BooleanOptionalAction, default=None,
                   help="also run the dense Keras MLP and the tfmot peer (default: the profile's, on)")
    p.add_argument("--seed", type=_non_negative_int, default=0)
    p.add_argument("--verbose", type=int, choices=(0, 1, 2), default=2,
                   help="Keras verbosity of each run (default 2: one line per epoch)")


def cmd_reproduce(args):
    from keras_dynhp.experiments import datasets, harness, reproduce

    n_layers = len(harness.LENET_HIDDEN) + 1
    lam = None
    if args.l0_lambda is not None:
        if len(args.l0_lambda) not in (1, n_layers):
            raise UsageError(f"--lambda needs 1 or {n_layers} values (one per gated layer of "
                             f"LeNet-300-100); received {len(args.l0_lambda)}")
        lam = args.l0_lambda[0] if len(args.l0_lambda) == 1 else args.l0_lambda
    _makedirs(args.output, "--output")
    start = time.perf_counter()
    try:
        results = reproduce.run(args.output, args.profile, args.datasets, args.epochs, lam, args.gamma,
                                args.learning_rate, args.budget, args.seed, args.peers, args.verbose)
    except datasets.DataError as e:
        raise RunError(f"cannot load the data: {_lines(e)}") from e
    print()
    with open(os.path.join(args.output, "table.md")) as f:
        print(f.read())
    print(f"[reproduce] {len(results)} runs, {time.perf_counter() - start:.0f} s this invocation; "
          f"outputs in {args.output}")
    return 0
