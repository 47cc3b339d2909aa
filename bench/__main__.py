"""python -m bench [--quick] [--skip ROW ...]: see bench/run.py."""

import sys

from bench.run import main

sys.exit(main())
