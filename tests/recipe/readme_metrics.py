"""The metric names of recipe/domain_grpo/README.md's "Metrics" table, as patterns a run's metrics file must match."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "recipe" / "domain_grpo" / "README.md"
PLACEHOLDER = re.compile(r"<[A-Za-z_]+>")


def readme_metric_patterns(readme: Path = README) -> dict[str, re.Pattern]:
    """{name as written: regex} for every backticked name in the first column of the "## Metrics" table.

    A placeholder such as `<name>` or `<data_source>` matches one path segment.
    """
    text = readme.read_text()
    section = text.split("\n## Metrics\n", 1)[1].split("\n## ", 1)[0]
    patterns = {}
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        first_column = line.split("|")[1]
        for name in re.findall(r"`([^`]+)`", first_column):
            parts = PLACEHOLDER.split(name)
            regex = "[^/]+".join(re.escape(part) for part in parts)
            patterns[name] = re.compile(f"^{regex}$")
    return patterns


def missing_readme_metrics(keys: Iterable[str], readme: Path = README) -> list[str]:
    """The README table's metric names that none of `keys` (a run's logged metric names) matches."""
    keys = list(keys)
    return [name for name, pattern in readme_metric_patterns(readme).items() if not any(map(pattern.match, keys))]
