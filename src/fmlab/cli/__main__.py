"""`python -m fmlab.cli`, as `python -m fmlab`."""

import sys

from fmlab.cli import main

sys.exit(main())
