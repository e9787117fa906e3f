"""The measured choice: time a usable GPU variant against the CPU build, in child processes.

`speed` times pp and tg with llama.cpp's counters (as llama-bench does; the backend's
benchmark uses it too), `run` runs one child per variant within a time bound, `cache` keeps the
result per model x variant x driver, `verdict` is the rule the launch applies, and `job` runs a
measurement in the background once the server is up.
"""
