"""Test helper: tiktoken-format BPE files (`<base64 token bytes> <rank>` per line) of a chosen size."""

import base64
from pathlib import Path


def write_tiktoken_file(path: Path, ranks: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = (f"{base64.b64encode(f'tok{rank}'.encode()).decode()} {rank}" for rank in range(ranks))
    path.write_text("\n".join(lines) + "\n")
    return path
