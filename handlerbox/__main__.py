"""`python -m handlerbox` is the `handlerbox` command."""

import sys

from handlerbox.runtime.cli import main

sys.exit(main())
