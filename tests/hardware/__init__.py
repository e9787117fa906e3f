"""Test doubles at the hardware boundary: the fake NVIDIA driver."""
