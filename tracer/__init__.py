"""Wrapper-free tracing of marked functions; see README.md."""
