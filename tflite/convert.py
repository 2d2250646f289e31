"""Converts a saved .keras model (DynHPModel or compact) to a LiteRT .tflite file.

    python tflite/convert.py runs/demo/model.keras runs/demo/model-int8.tflite --quantization int8

The same as `keras-dynhp export MODEL OUTPUT [options]` (see `--help`): a
DynHPModel is stripped first (gates folded into the kernels, zero-gated units
removed). `--quantization int8` writes a full-integer file (int8 input, output
and ops) calibrated on 300 of the dataset's training images; it is what the
Edge TPU compiler takes (`edgetpu_compiler model-int8.tflite`, run outside this
project; add `--batch-size 1`, it needs static shapes, and `--no-gather`, which
leaves the pixel GATHER out and writes the kept pixels as JSON). `--trainable`
writes the float on-device training file (train/infer/save/restore signatures).
User errors print one line `convert.py: error: ...` and exit with status 1.
"""

import os
import sys

from keras_dynhp.cli import main  # no TensorFlow yet: the command imports it, after the quiet log level

if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main(sys.argv[1:], prog=os.path.basename(__file__), command="export"))
