"""RL client: reward client, trainer adapters and rlkd-train (built under its own issue; empty for now)."""
