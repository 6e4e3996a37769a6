"""One module per command; `titanbench.cli` imports them lazily."""
