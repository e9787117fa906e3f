"""`python -m llamaship_backend`: the same as the `llamaship` command."""

from llamaship_backend.cli import main

raise SystemExit(main())
