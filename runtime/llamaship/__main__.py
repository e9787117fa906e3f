"""`python -m llamaship`: the runtime's commands, without the HTTP backend (`serve` needs
`python -m llamaship_backend` or the `llamaship` command)."""

from llamaship.cli import main

raise SystemExit(main())
