"""ppd — Point Prompt Defender: make Segment Anything robust to bad point prompts."""

__version__ = "0.1.0"
