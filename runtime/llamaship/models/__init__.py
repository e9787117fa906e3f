"""Models pulled from the bundled catalogue (or a URL) into `LLAMASHIP_HOME/models`, and the
user's settings file that says which one is used (docs/models.md)."""
