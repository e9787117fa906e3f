"""Shared pytest setup: each area's fixtures live in its own plugin module."""

pytest_plugins = [
    "fixtures_backend",
    "fixtures_hardware",
]
