"""Shared pytest setup: each area's fixtures live in its own plugin module."""

pytest_plugins = [
    "fixtures_backend",
    "fixtures_bundle",
    "fixtures_hardware",
    "fixtures_overlay",
    "fixtures_overlay_server",
    "fixtures_release",
]
