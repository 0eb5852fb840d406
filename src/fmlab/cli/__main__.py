"""`python -m fmlab.cli`, as `python -m fmlab`."""

import sys

from . import main

sys.exit(main())
