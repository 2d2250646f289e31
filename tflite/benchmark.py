"""Per-sample latency and file size of .tflite classifiers (LiteRT interpreter).

    python tflite/benchmark.py runs/demo/model.tflite runs/demo/model-int8.tflite --runs 2000

The same as `keras-dynhp benchmark MODEL [MODEL ...] [options]` (see `--help`):
batch 1, one interpreter per file with `--threads` threads (default 1),
`--warmup` untimed invocations, then the median (and 90th percentile) over
`--runs` timed invocations; each timed call sets one test image (quantized for
int8 files) and invokes. The interpreter applies its default delegate (XNNPACK)
as on a device. Timings depend on the machine and on what else runs on it.
"""

import os
import sys

from keras_dynhp.cli import main  # no TensorFlow yet: the command imports it, after the quiet log level

if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main(sys.argv[1:], prog=os.path.basename(__file__), command="benchmark"))
