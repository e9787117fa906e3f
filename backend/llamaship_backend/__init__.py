"""The FastAPI backend shipped in the llamaship bundle (OpenAI-compatible llama.cpp server)."""
