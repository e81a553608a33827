"""The verl a recipe was tested with (its `REQUIRED_VERL.txt`) against the verl that is importable: warn once on a
difference.

`REQUIRED_VERL.txt` follows verl-recipe's convention (each recipe states the verl it was tested with and how to
refresh that): `KEY=VALUE` lines, `#` comments. This module reads `VERL_VERSION` (required) and `VERL_COMMIT`
(optional, named in the warning). The installed version is read from the importable `verl` package's
`version/version` file without importing verl (which would start Ray's imports), so a source checkout first on
`PYTHONPATH` counts, not only the wheel.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

_WARNED: set[tuple[str, str]] = set()  # (resolved REQUIRED_VERL.txt, installed version) already logged


def read_required_verl(required_file: str | os.PathLike) -> dict[str, str]:
    """The `KEY=VALUE` pairs of a `REQUIRED_VERL.txt` (comments and blank lines skipped).

    Raises:
        FileNotFoundError: the file is missing (named).
        ValueError: a line is not `KEY=VALUE`, or `VERL_VERSION` is missing or empty (file and line named).
    """
    path = Path(required_file)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such REQUIRED_VERL.txt")
    fields: dict[str, str] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{path}:{number}: expected KEY=VALUE, got {line!r}")
        fields[key.strip()] = value.strip()
    if not fields.get("VERL_VERSION"):
        raise ValueError(f"{path}: no VERL_VERSION=<version> line (the verl version this recipe was tested with)")
    return fields


def installed_verl_version() -> str | None:
    """The version of the importable verl (its `version/version` file, else the installed distribution), or None."""
    spec = importlib.util.find_spec("verl")
    if spec is not None and spec.submodule_search_locations:
        version_file = Path(next(iter(spec.submodule_search_locations))) / "version" / "version"
        if version_file.is_file():
            return version_file.read_text(encoding="utf-8").strip()
    try:
        return importlib.metadata.version("verl")
    except importlib.metadata.PackageNotFoundError:
        return None


def warn_if_untested_verl(required_file: str | os.PathLike, installed: str | None = None) -> str | None:
    """Compare the importable verl with the one `required_file` was tested with; log a warning once on a difference.

    Args:
        required_file: a recipe's `REQUIRED_VERL.txt`.
        installed: the installed verl version; None reads it (`installed_verl_version`).

    Returns:
        The warning text when the versions differ (on every call, so a caller can show it again), else None.
        It is logged (WARNING, logger `verl_ext.verl_version`) only the first time for this file and version.

    Raises:
        FileNotFoundError, ValueError: `required_file` is missing or malformed (see `read_required_verl`).
    """
    required = read_required_verl(required_file)
    if installed is None:
        installed = installed_verl_version()
    tested = required["VERL_VERSION"]
    if installed == tested:
        return None
    commit = f" (commit {required['VERL_COMMIT']})" if required.get("VERL_COMMIT") else ""
    message = (
        f"verl {installed or 'not found'} is installed, but this recipe was tested with verl {tested}{commit} "
        f"({required_file}); it may not run as documented"
    )
    key = (str(Path(required_file).resolve()), str(installed))
    if key not in _WARNED:
        _WARNED.add(key)
        logger.warning(message)
    return message
