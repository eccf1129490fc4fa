"""``python -m ewc_rl`` is the ``ewc-rl`` command."""

import sys

from ewc_rl.cli import main

sys.exit(main())
