"""``python3 -m`` entry of the agent package (the zipapp has its own ``__main__`` at its root)."""

from __future__ import annotations

import sys

from .cli import main

sys.exit(main())
