"""The contract between llamaship's build side and its runtime.

Every JSON document that crosses a boundary (signed overlay manifests and release index,
detection report, bundle manifest, `/api/capabilities`, state files) is declared here once as a
pydantic model, together with what both sides share: names, hashing, ed25519 signatures
(`signing`) and the escaping of untrusted text (`textsafe`). This package imports
nothing from `llamaship`, `llamaship_backend` or `llamaship_build`: they all import it.
"""
