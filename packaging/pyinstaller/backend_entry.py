"""Entry script of the frozen `backend` executable."""

from llamaship_backend.cli import backend_main

raise SystemExit(backend_main())
