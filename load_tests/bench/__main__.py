"""``python -m load_tests.bench``."""

import sys

from load_tests.bench.cli import main

sys.exit(main())
