"""The launch: before anything imports llama_cpp, decide the build, count boots, probe, activate."""
