"""Evaluation suite: segmentation and agreement metrics (built under its own issue; empty for now)."""
