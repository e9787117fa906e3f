"""Helpers of the overlay install tests; the pytest fixtures are in `fixtures_overlay_server`."""
