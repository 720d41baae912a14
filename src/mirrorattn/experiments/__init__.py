"""Experiments: config dataclasses, runners and CLI subcommands that write run folders."""
