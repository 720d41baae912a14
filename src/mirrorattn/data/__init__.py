"""Data: synthetic generators, real-data loaders (text, vision), paths and downloads."""
