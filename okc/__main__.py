"""``python -m okc`` is the ``okc`` command."""

import sys

from okc.cli import main

sys.exit(main())
