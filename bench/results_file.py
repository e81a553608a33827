"""Write one benchmark's section of bench/RESULTS.md atomically, leaving the other sections as they are."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def replace_section(path: str | os.PathLike, key: str, title: str, body: str) -> None:
    """Replace (or append) the block between `<!-- section:key -->` markers with `## title` and `body`."""
    path = Path(path)
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    start, end = f"<!-- section:{key} -->", f"<!-- /section:{key} -->"
    block = f"{start}\n## {title}\n\n{body.rstrip()}\n{end}"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
