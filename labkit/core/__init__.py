"""Foundations that every layer uses: the one error type, named registries, where files live, whole-file writes,
the device and precision, and the lines labkit prints. Imports nothing else of labkit."""
