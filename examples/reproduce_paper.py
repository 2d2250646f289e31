"""Reproduce the DynHP paper's experiments: `keras-dynhp reproduce` (same options, see --help).

    python examples/reproduce_paper.py --profile quick --output runs/reproduce
    keras-dynhp reproduce --profile quick --output runs/reproduce      # the same

Profiles (see `keras_dynhp.experiments.reproduce.PROFILES`):
  paper  both datasets, SP and HP at batch {16,32,64,100,128,256,512}, DynHP over the paper's
         alpha_bs grids (MNIST 0.971-0.975, Fashion-MNIST 0.979-0.989), 2000 epochs.
  quick  both datasets, SP at {32,128,512}, HP at {100,128}, DynHP at two alpha_bs per dataset
         (MNIST 0.972/0.975, Fashion-MNIST 0.980/0.988), 20 epochs: fits a 2-core CPU.
  tiny   Fashion-MNIST, 2,000 training images, 2 epochs: a smoke test.
All use LeNet-300-100, lambda 0.01, gamma 0.5, Adam 1e-3, initial DynHP batch 16, and the
DynHP budget = per-epoch memory of the SP run with the lowest test error. Peers: a dense Keras
MLP and tfmot magnitude pruning (needs `pip install keras_dynhp[compare]`).

The run is resumable: re-running the same command skips finished configurations and resumes
an interrupted one from its last finished epoch. Outputs: results.json, results.csv, table.md
and PNG plots in --output.
"""

import sys

from keras_dynhp.cli import main

if __name__ == "__main__":
    sys.exit(main(["reproduce", *sys.argv[1:]]))
