"""Accuracy of a .tflite classifier on a dataset's test set with the LiteRT interpreter.

    python tflite/evaluate.py runs/demo/model-int8.tflite --dataset fashion_mnist --limit 1000

The same as `keras-dynhp evaluate MODEL [options]` (see `--help`), for .tflite
files only: float, dynamic-range, float16 and full-int8 files (inputs quantized
with the input tensor's scale and zero point) and on-device training files
(through their `infer` signature). User errors print one line
`evaluate.py: error: ...` and exit with status 1.
"""

import os
import sys

from keras_dynhp.cli import main  # no TensorFlow yet: the command imports it, after the quiet log level

PROG = os.path.basename(__file__)

if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    keras_files = [a for a in sys.argv[1:] if a.endswith(".keras")]
    if keras_files:  # `keras-dynhp evaluate` takes .keras files too; this script does not
        print(f"{PROG}: error: expected a .tflite file; received {keras_files[0]} "
              "(evaluate .keras models with `keras-dynhp evaluate`)", file=sys.stderr)
        sys.exit(1)
    sys.exit(main(sys.argv[1:], prog=PROG, command="evaluate"))
