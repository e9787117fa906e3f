"""Test launcher: `python tests/trusting_cli.py KEY[,KEY...] ARGS...` runs the real
`llamaship` command with ARGS, trusting the release public key(s) KEY besides the bundled ones.

The keys go in through the Python API (`llamaship_backend.cli.main(trusted_keys=...)`): the
shipped command reads release keys only from the bundle, and no variable or file can add one.
"""

from __future__ import annotations

import sys

from llamaship.io.trusted_keys import bundled_trusted_keys
from llamaship_backend.cli import main

if __name__ == "__main__":
    keys, *arguments = sys.argv[1:]
    extra = [key.strip() for key in keys.split(",") if key.strip()]
    raise SystemExit(main(arguments, trusted_keys=(*bundled_trusted_keys().release, *extra)))
