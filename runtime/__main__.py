"""`python -m runtime` is the `handlerbox` command."""

import sys

from runtime.cli import main

sys.exit(main())
