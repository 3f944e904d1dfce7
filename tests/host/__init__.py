"""Conformance with the real Functions Python runtime, driven over the host's gRPC protocol."""
