"""GSRM training: SFT data building and LoRA fine-tuning (built under its own issue; empty for now)."""
