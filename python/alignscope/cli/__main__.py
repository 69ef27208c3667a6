"""`python -m alignscope.cli` (what `accelerate launch -m alignscope.cli` runs)."""

import sys

from alignscope.cli import main

sys.exit(main())
