"""The model catalogue shipped in the bundle (`catalogue.json`, package data)."""

from __future__ import annotations

from importlib import resources

from llamaship_contract.document import parse_document
from llamaship_contract.models import ModelCatalogue

CATALOGUE_NAME = "catalogue.json"


def bundled_catalogue() -> ModelCatalogue:
    """The catalogue this build ships (a `ContractError` if the bundle's copy is broken)."""
    data = resources.files("llamaship.models").joinpath(CATALOGUE_NAME).read_bytes()
    return parse_document(ModelCatalogue, data, f"the bundled model catalogue ({CATALOGUE_NAME})")
