"""``python -m d2lopt.cli``: the ``d2lopt`` command."""

import sys

from d2lopt.cli import main

sys.exit(main())
