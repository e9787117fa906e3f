"""llamaship runtime: the launch-time loader of the bundled llama.cpp backend."""

__version__ = "0.1.0"
