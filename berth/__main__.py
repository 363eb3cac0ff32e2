"""``python -m berth``: the same program as the ``berth`` console script."""

import sys

from berth.cli import main

sys.exit(main())
