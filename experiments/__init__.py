"""Experiments that exercise the whole pipeline (not part of the installed distribution)."""
