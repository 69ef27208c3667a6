import sys

from alignscope.cli import main

sys.exit(main())
