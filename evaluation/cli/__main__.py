"""``python -m evaluation.cli``: the ``ntp-bench`` command."""

import sys

from evaluation.cli.main import main

sys.exit(main())
