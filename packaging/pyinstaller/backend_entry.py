"""Entry script of the frozen `backend` executable."""

from llamaship.cli import backend_main

raise SystemExit(backend_main())
