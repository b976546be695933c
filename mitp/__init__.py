"""mitp: Memory-Inspired Temporal Prompt Interaction on frozen CLIP."""

__version__ = "0.1.0"
