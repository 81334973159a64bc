"""How every eqtrain command stops on a user's error: one line on stderr, exit status 2."""

from __future__ import annotations

import sys


def fail(message: str, prog: str = "eqtrain") -> None:
    print(f"{prog}: error: {message}", file=sys.stderr)
    sys.exit(2)
