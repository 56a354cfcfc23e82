"""Execution engines: how a stage function is run over many items."""
