"""Shared pytest setup: each area's fixtures live in its own plugin module."""

# Plugins that others import come first (pytest can only rewrite asserts of modules it
# imports itself).
pytest_plugins = [
    "tiers",
    "fixtures_overlay",
    "fixtures_backend",
    "fixtures_bundle",
    "fixtures_hardware",
    "fixtures_overlay_server",
    "fixtures_release",
    "fixtures_models",
    "fixtures_browser",
    "fixtures_vulkan",
]
