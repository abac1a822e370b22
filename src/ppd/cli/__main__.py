"""``python -m ppd.cli``: the same as the ``ppd`` command."""

import sys

from ppd.cli import main

sys.exit(main())
