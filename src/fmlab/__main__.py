import sys

from fmlab.cli import main

sys.exit(main())
