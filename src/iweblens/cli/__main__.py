"""``python -m iweblens.cli``: the console script without its installed wrapper."""

import sys

from iweblens.cli import main

sys.exit(main())
