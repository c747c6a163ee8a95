"""Plugins built into the core, registered through the same path as third-party ones."""
