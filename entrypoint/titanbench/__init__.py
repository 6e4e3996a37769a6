"""titanbench: reproduce the June 2025 async-TP torchtitan benchmark."""

__version__ = "0.1.dev0"
