"""gsrm-serve: the OpenAI-compatible scoring server (built under its own issue; empty for now)."""
