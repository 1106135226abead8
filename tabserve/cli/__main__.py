"""``python -m tabserve.cli``: the ``tabserve`` command (the image's entrypoint)."""

import sys

from tabserve.cli.main import main

sys.exit(main())
