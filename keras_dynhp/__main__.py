"""`python -m keras_dynhp`: the `keras-dynhp` command line (see :mod:`keras_dynhp.cli`)."""

import sys

from keras_dynhp.cli import main

if __name__ == "__main__":
    sys.exit(main())
