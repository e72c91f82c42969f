"""`python -m keras_svre` is the `keras-svre` command."""

import sys

from keras_svre.cli import main

sys.exit(main())
