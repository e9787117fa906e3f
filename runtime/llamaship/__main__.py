"""`python -m llamaship`: the same as the `llamaship` command."""

from llamaship.cli import main

raise SystemExit(main())
