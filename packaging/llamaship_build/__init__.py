"""llamaship build side: locks, the portable llama.cpp wheel, backend.spec, bundle, benchmarks."""
