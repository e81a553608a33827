"""A dataset as downloaded: an extracted folder, an official .zip archive, or a folder holding both.

Members are addressed by their path inside the dataset tree (the same whether the tree came from a folder or from a
zip), so a conversion gives identical rows either way. `FileRef`s are small and picklable: pool workers open archives
themselves (one cached handle per process), so image bytes never travel from the main process to a worker.
"""

from __future__ import annotations

import os
import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from data_prep.report import DataPrepError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".gif", ".webp"})
_ZIP_CACHE: dict[str, zipfile.ZipFile] = {}


@dataclass(frozen=True)
class FileRef:
    """Where a worker reads one member: `archive` (a zip path) or None for a plain file under `root`."""

    root: str
    archive: str | None
    member: str


def base_name(path: str) -> str:
    """The last component of a '/'-separated member path (a fast `PurePosixPath(path).name`)."""
    return path.rsplit("/", 1)[-1]


def is_mac_metadata(path: str) -> bool:
    """True for a macOS `._*` AppleDouble file (resource-fork metadata that copies from a Mac leave next to files)."""
    return base_name(path).startswith("._")


def is_image_name(path: str) -> bool:
    """True if the file name has an image extension (case-insensitive) and is not a macOS `._*` AppleDouble file
    (resource-fork metadata that copies from a Mac leave next to every file; ignored like `.DS_Store`)."""
    name = base_name(path)
    dot = name.rfind(".")
    return dot > 0 and not is_mac_metadata(name) and name[dot:].lower() in IMAGE_EXTENSIONS


def read_ref(ref: FileRef) -> bytes:
    """Read the bytes of one member (the zip handle is cached per process).

    A plain file is opened non-blocking and must be a regular file: a FIFO or device named like an image raises
    OSError at once instead of blocking the run forever.
    """
    if ref.archive is None:
        fd = os.open(os.path.join(ref.root, ref.member), os.O_RDONLY | os.O_NONBLOCK)
        with open(fd, "rb") as fh:
            mode = os.fstat(fd).st_mode
            if not stat.S_ISREG(mode):
                kind = "a FIFO" if stat.S_ISFIFO(mode) else "a socket or device"
                raise OSError(f"not a regular file ({kind})")
            return fh.read()
    zf = _ZIP_CACHE.get(ref.archive)
    if zf is None:
        zf = _ZIP_CACHE[ref.archive] = zipfile.ZipFile(ref.archive)
    return zf.read(ref.member)


def close_archives() -> None:
    """Close the cached zip handles of this process."""
    for zf in _ZIP_CACHE.values():
        zf.close()
    _ZIP_CACHE.clear()


class Source:
    """The files of one dataset.

    Args:
        root: a folder or an official archive (.zip). A folder may hold the official archives (`archive_names`); their
            members are listed as if extracted, and files already extracted on disk win over archive members.
        archive_names: official archive file names to open when found at any depth of a folder `root`.
    """

    def __init__(self, root: str | os.PathLike, archive_names: tuple[str, ...] = ()) -> None:
        self.root = Path(root).expanduser().resolve()
        if not self.root.exists():
            raise DataPrepError(f"--root {self.root} does not exist")
        self.files: dict[str, FileRef] = {}
        self.dirs: set[str] = set()
        self.rar_found: list[str] = []
        self.loops: list[str] = []  # symlinked folders not entered again (they lead back to a folder already read)
        self.bad_names: list[str] = []  # paths that are not valid UTF-8 (shown with \x escapes), left out of `files`
        if self.root.is_file():
            self._add_archive(self.root)
        else:
            self._scan_folder(archive_names)
        self.members = sorted(self.files)
        self._by_name: dict[str, list[str]] | None = None

    def _scan_folder(self, archive_names: tuple[str, ...]) -> None:
        """Walk the folder, following symlinked folders like symlinked files; a folder reached twice (a symlink cycle
        or a second link to the same folder) is read once, the later path is listed in `loops`."""
        archives: list[Path] = []
        seen = {_identity(self.root)}
        for dirpath, dirnames, filenames in os.walk(self.root, followlinks=True):
            dirnames.sort()
            rel_dir = Path(dirpath).relative_to(self.root).as_posix()
            for name in list(dirnames):
                ident = _identity(Path(dirpath) / name)
                if ident is None:  # unreadable: os.walk skips it
                    continue
                if ident in seen:
                    dirnames.remove(name)
                    self.loops.append(name if rel_dir == "." else f"{rel_dir}/{name}")
                seen.add(ident)
            if rel_dir != ".":
                self.dirs.add(rel_dir)
            for name in sorted(filenames):
                rel = name if rel_dir == "." else f"{rel_dir}/{name}"
                if not _is_utf8(rel):  # os.walk keeps undecodable bytes as surrogates: no parquet/JSON can hold them
                    self.bad_names.append(printable(rel))
                    continue
                if name in archive_names:
                    archives.append(Path(dirpath) / name)
                elif name.lower().endswith(".rar") and Path(name).stem in {Path(a).stem for a in archive_names}:
                    self.rar_found.append(rel)
                else:
                    self.files[rel] = FileRef(str(self.root), None, rel)
        for archive in archives:
            self._add_archive(archive)

    def _add_archive(self, path: Path) -> None:
        if not zipfile.is_zipfile(path):
            hint = " (.rar: extract it first, e.g. `unrar x` or `bsdtar -xf`)" if path.suffix.lower() == ".rar" else ""
            raise DataPrepError(f"{path} is not a readable zip archive{hint}")
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                name = info.filename.replace("\\", "/").lstrip("/")
                if name.startswith("__MACOSX/"):
                    continue
                parts = PurePosixPath(name).parts
                for i in range(1, len(parts)):
                    self.dirs.add("/".join(parts[:i]))
                if info.is_dir():
                    self.dirs.add(name.rstrip("/"))
                elif name not in self.files:
                    self.files[name] = FileRef(str(self.root), str(path), info.filename)

    def rar_hint(self) -> str:
        """A sentence telling the user to extract a found .rar archive, or ''."""
        if not self.rar_found:
            return ""
        return f" Found {self.rar_found}: .rar cannot be read here; extract it next to itself first."

    def find(self, basename: str) -> list[str]:
        """Members whose file name is `basename` (any folder), sorted."""
        if self._by_name is None:
            self._by_name = {}
            for member in self.members:
                self._by_name.setdefault(base_name(member), []).append(member)
        return list(self._by_name.get(basename, []))


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def printable(path: str) -> str:
    """A path from the file system with its undecodable bytes as `\\xNN` escapes (safe to print and store)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def read_text(source: Source, member: str, what: str) -> str:
    """A small text file of the dataset (split list, class list, json) as UTF-8; any failure is one `DataPrepError`
    naming the file and saying what to do."""
    where = f"{source.root / member if source.files[member].archive is None else f'{source.root}:{member}'}"
    try:
        data = read_ref(source.files[member])
    except (OSError, KeyError, EOFError, zipfile.BadZipFile, zlib.error, RuntimeError, NotImplementedError) as exc:
        raise DataPrepError(f"cannot read the {what} {where}: {exc}") from exc
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataPrepError(
            f"the {what} {where} is not UTF-8 text (byte {exc.start}: {data[exc.start : exc.start + 1]!r}); "
            "re-save it as UTF-8"
        ) from exc


def _identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the folder a path leads to, symlinks resolved; None if it cannot be read."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino
