"""Shared output machinery: the decode/encode process pool and atomic, row-grouped parquet writing.

- `EncoderPool.map` keeps at most a few chunks in flight, so memory stays bounded at any dataset size, and returns
  results in input order, so the output is identical for any number of workers.
- `OutputDir` locks `--out` (a second run writing there fails at once, naming the first), writes every file into a
  hidden temporary folder inside it and renames them into place only when the whole run succeeded: a failed or
  interrupted run never leaves a half-written or mixed set of files, nor the folders it created for `--out`.
- `RowGroupWriter` buffers rows and flushes a parquet row group every `row_group_rows` rows or ~64 MiB of images.
"""

from __future__ import annotations

import fcntl
import json
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from data_prep.images import VERIFY_LEVELS, encode_chunk, worker_init, worker_started
from data_prep.report import DataPrepError
from data_prep.schema import ARROW_SCHEMA
from data_prep.source import close_archives

ROW_GROUP_BYTES = 64 << 20
RUN_FILES = ("report.json", "splits.json")  # with *.parquet: the files a run writes into --out
TMP_PREFIX = ".data_prep-tmp-"  # + "<pid>-<random>": the temporary folder of a run inside --out
IMAGE_COLUMN = "images.list.element.bytes"


def _parquet_options() -> dict[str, Any]:
    """Already-compressed image bytes: no codec, no dictionary, no min/max statistics; snappy for the rest."""
    paths = ARROW_SCHEMA_PATHS
    others = [p for p in paths if p != IMAGE_COLUMN]
    codecs = {p: ("NONE" if p == IMAGE_COLUMN else "SNAPPY") for p in paths}
    return {"compression": codecs, "use_dictionary": others, "write_statistics": others}


def _leaf_paths(schema: pa.Schema) -> list[str]:
    """Parquet column paths of an arrow schema (lists as `<name>.list.element`)."""
    out: list[str] = []

    def walk(prefix: str, typ: pa.DataType) -> None:
        if pa.types.is_list(typ):
            walk(prefix + ".list.element", typ.value_type)
        elif pa.types.is_struct(typ):
            for i in range(typ.num_fields):
                walk(f"{prefix}.{typ.field(i).name}", typ.field(i).type)
        else:
            out.append(prefix)

    for fld in schema:
        walk(fld.name, fld.type)
    return out


ARROW_SCHEMA_PATHS = _leaf_paths(ARROW_SCHEMA)


def _column(values: list[Any], typ: pa.DataType) -> pa.Array:
    """`pa.array(values, type=typ)`, built faster: a struct field by field, and a field whose value is the same in
    every row (the prompt, class_names, transforms, ...) converted once and repeated in C++ (`take`)."""
    if not values:
        return pa.array([], type=typ)
    if pa.types.is_struct(typ) and all(isinstance(v, dict) for v in values):
        fields = [typ.field(i) for i in range(typ.num_fields)]
        return pa.StructArray.from_arrays([_column([v[f.name] for v in values], f.type) for f in fields], fields=fields)
    first = values[0]
    if len(values) > 1 and all(v == first for v in values):
        return pa.array([first], type=typ).take(pa.array(np.zeros(len(values), dtype=np.int32)))
    return pa.array(values, type=typ)


def rows_to_table(rows: list[dict[str, Any]]) -> pa.Table:
    """A list of `make_row` dicts as a table with exactly `ARROW_SCHEMA` (column-wise: ~10x faster than from_pylist;
    equal to `pa.Table.from_pylist(rows, schema=ARROW_SCHEMA)`, tests/data_prep/test_writer_on_cpu.py)."""
    arrays = [_column([r[f.name] for r in rows], f.type) for f in ARROW_SCHEMA]
    return pa.Table.from_arrays(arrays, schema=ARROW_SCHEMA)


def default_workers() -> int:
    """One worker per available core (at most 16)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, 16))


@contextmanager
def _signals_deferred(signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)) -> Iterator[None]:
    """Hold Ctrl-C/SIGTERM back until the block ends, then deliver them (main thread only; elsewhere a no-op)."""
    caught: list[int] = []
    try:
        previous = {sig: signal.signal(sig, lambda signum, frame: caught.append(signum)) for sig in signals}
    except ValueError:  # not the main thread: signals are not delivered here anyway
        yield
        return
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sig in dict.fromkeys(caught):
            signal.raise_signal(sig)


class EncoderPool:
    """Encode payloads in a process pool (`workers >= 1`) or inline (`workers == 0`), results in order."""

    def __init__(self, workers: int, min_size: int, verify: str = "full", chunk: int = 32) -> None:
        if verify not in VERIFY_LEVELS:
            raise ValueError(f"verify must be one of {VERIFY_LEVELS}, got {verify!r}")
        self.workers, self.min_size, self.verify, self.chunk = workers, min_size, verify, chunk
        self._executor: ProcessPoolExecutor | None = None
        self._started: list[Future] = []
        if workers > 0:
            # forkserver: workers never inherit the parent's threads (torch, tokenizers) or its memory; it imports
            # the decoder once, and the workers start now (one no-op each), while the main process indexes the data
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(["data_prep.images"])
            with _signals_deferred():  # a worker half-started by an interrupted spawn is not killed by close()
                self._executor = ProcessPoolExecutor(
                    workers, mp_context=ctx, initializer=worker_init, initargs=(os.getpid(),)
                )
                try:
                    self._started = [self._executor.submit(worker_started) for _ in range(workers)]
                except BaseException:
                    self.close(kill=True)
                    raise

    def map(self, payloads: Iterable[Any], chunk_fn: Callable[[list[Any]], list[Any]] | None = None) -> Iterator[Any]:
        """Yield one `Encoded` per payload (or `chunk_fn`'s answer: a module-level function, chunk in, list out), in
        order, with at most 2 * workers + 2 chunks in flight."""
        fn = chunk_fn or partial(encode_chunk, min_size=self.min_size, verify=self.verify)
        it = iter(payloads)
        if self._executor is None:
            while chunk := list(islice(it, self.chunk)):
                yield from fn(chunk)
            return
        pending: deque[Future] = deque()
        limit = 2 * self.workers + 2
        while True:
            while len(pending) < limit and (chunk := list(islice(it, self.chunk))):
                pending.append(self._executor.submit(fn, chunk))
            if not pending:
                return
            yield from pending.popleft().result()

    def close(self, kill: bool = False) -> None:
        """Stop the workers (`kill`: at once, without waiting for the chunks they hold) and close this process's
        archive handles."""
        if self._executor is not None:
            if kill:  # a worker may be blocked (a FIFO, a hung network file): never wait for it on the way out
                for pid in list(getattr(self._executor, "_processes", None) or {}):  # no public API before 3.14
                    # by pid: Process.kill() does nothing once the forkserver is gone (a group SIGTERM kills it), as
                    # multiprocessing then takes every worker for dead; workers ignore SIGTERM (worker_init)
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            # wait=True also after a kill: the dead workers are reaped at once, and the executor's thread is joined
            # here, not raced by concurrent.futures' exit hook (Python 3.11 prints "Bad file descriptor" then)
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        close_archives()

    def __enter__(self) -> EncoderPool:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        self.close(kill=exc_type is not None)


class RowGroupWriter:
    """Append rows to one parquet file, one row group per `row_group_rows` rows (or ~64 MiB of image bytes)."""

    def __init__(self, path: Path, row_group_rows: int) -> None:
        self.path, self.row_group_rows = path, row_group_rows
        self._writer = pq.ParquetWriter(path, ARROW_SCHEMA, **_parquet_options())
        self._rows: list[dict[str, Any]] = []
        self._bytes = 0
        self.count = 0

    def add(self, row: dict[str, Any]) -> None:
        """Buffer one row; flush a row group when the buffer is full."""
        self._rows.append(row)
        self._bytes += sum(len(im["bytes"]) for im in row["images"])
        self.count += 1
        if len(self._rows) >= self.row_group_rows or self._bytes >= ROW_GROUP_BYTES:
            self.flush()

    def flush(self) -> None:
        """Write the buffered rows as one row group."""
        if self._rows:
            table = rows_to_table(self._rows)
            self._writer.write_table(table, row_group_size=len(self._rows))
            self._rows, self._bytes = [], 0

    def close(self) -> None:
        """Flush and close the file."""
        self.flush()
        self._writer.close()


def _describe(run: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in run.items())


def check_out_dir(out: Path, identity: dict[str, Any], overwrite: bool = False) -> list[str]:
    """The run files already in `out` (to be replaced or removed when this run commits); refuses another run's.

    `out` may hold the files of the same run (its report.json names the same `identity`: dataset, seed, shots); a
    report of another run, or parquet files that no report there lists, are refused unless `overwrite`. Other files
    (a README, notes) are never touched.
    """
    if not out.is_dir():
        return []
    present = sorted(p.name for p in out.iterdir() if p.is_file() and (p.suffix == ".parquet" or p.name in RUN_FILES))
    if not present or overwrite:
        return present
    hint = "use another --out folder, or --overwrite to replace its files"
    listed = set(RUN_FILES)
    if "report.json" in present:
        try:
            old = json.loads((out / "report.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = None
        if not isinstance(old, dict):
            raise DataPrepError(f"--out {out} holds a report.json that is not data_prep's; {hint}")
        theirs = {k: old.get(k) for k in identity}
        if theirs != identity:
            raise DataPrepError(
                f"--out {out} holds the output of another run ({_describe(theirs)}; this run: {_describe(identity)}); "
                + hint
            )
        listed |= set(old.get("files") or {})
    foreign = [name for name in present if name not in listed]
    if foreign:
        raise DataPrepError(f"--out {out} holds {foreign[:5]} that no data_prep report.json there lists; {hint}")
    return present


def _missing_folders(path: Path) -> list[Path]:
    """The folders `mkdir(parents=True)` would create for `path`, innermost first."""
    missing = []
    for folder in (path, *path.parents):
        if folder.exists() or folder.is_symlink():
            break
        missing.append(folder)
    return missing


def _note(text: str) -> None:
    print(f"note: {text}", file=sys.stderr)


class OutputDir:
    """Files written under a temporary folder in `out`, moved into `out` by `commit()` (atomic per file).

    `out` is locked for the whole run (`flock` on the folder, released by the kernel when the process dies, however it
    dies): a second run on the same `out` fails at once naming the first, and a temporary folder found while the lock
    is held belongs to a run that is dead, so it is removed (and `log` told). `stale`: run files already in `out`
    (from `check_out_dir`, may be set after construction); those this run does not write again are removed at
    commit, so `out` ends up holding exactly this run's files. `abort()` also removes the folders created for `out`.
    """

    def __init__(
        self, out: str | os.PathLike, stale: Sequence[str] = (), log: Callable[[str], None] | None = None
    ) -> None:
        self.out = Path(out)
        self.stale = list(stale)
        if self.out.exists() and not self.out.is_dir():
            raise DataPrepError(f"--out {self.out} is a file, not a folder")
        self.created = _missing_folders(self.out.absolute())  # removed again by abort() (if still empty)
        self.tmp: Path | None = None
        self.names: list[str] = []
        self._lock_fd: int | None = None
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            self._lock()
            cleared = self._clear_dead_runs()
            if cleared:
                (log or _note)(
                    f"--out {self.out}: removed {len(cleared)} temporary folder(s) of interrupted runs: {cleared}"
                )
            self.tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{os.getpid()}-", dir=self.out))
        except BaseException:
            self.abort()
            raise

    def _lock(self) -> None:
        fd = os.open(self.out, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            others = sorted(p.name for p in self.out.glob(TMP_PREFIX + "*"))
            pids = sorted({n[len(TMP_PREFIX) :].split("-", 1)[0] for n in others})
            who = f"pid {', '.join(pids)}, writing {others}" if others else "it has not started writing yet"
            raise DataPrepError(
                f"--out {self.out} is in use by another data_prep run ({who}); wait for it to end, or use another --out"
            ) from None
        self._lock_fd = fd

    def _clear_dead_runs(self) -> list[str]:
        """Remove the temporary folders of runs that died without cleaning up (SIGKILL, power loss): with the lock
        held, no live run can own one."""
        dead = sorted(p for p in self.out.glob(TMP_PREFIX + "*") if p.is_dir() and not p.is_symlink())
        for folder in dead:
            shutil.rmtree(folder, ignore_errors=True)
        return [p.name for p in dead]

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def path(self, name: str) -> Path:
        """The temporary path for output file `name`."""
        if name not in self.names:
            self.names.append(name)
        return self.tmp / name

    def write_text(self, name: str, text: str) -> None:
        """Write a small text file (report, split lists)."""
        self.path(name).write_text(text, encoding="utf-8")

    def commit(self) -> list[Path]:
        """Rename every file into `out`, remove the stale ones, rename report.json last; drop the temporary folder."""
        names = sorted(self.names, key=lambda n: n == "report.json")
        for name in names:
            if name == "report.json":
                for old in self.stale:
                    if old not in self.names:
                        (self.out / old).unlink(missing_ok=True)
            os.replace(self.tmp / name, self.out / name)
        shutil.rmtree(self.tmp, ignore_errors=True)
        self._unlock()
        return [self.out / n for n in names]

    def drop(self, name: str) -> None:
        """Do not commit output file `name` after all (deletes its temporary file)."""
        if name in self.names:
            self.names.remove(name)
            (self.tmp / name).unlink(missing_ok=True)

    def abort(self) -> None:
        """Drop everything written so far, and the folders created for `out` (`out` included, if still empty)."""
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None
        self._unlock()
        for folder in self.created:  # innermost first; stops at the first that is not empty (another process uses it)
            try:
                folder.rmdir()
            except OSError:
                break
        self.created = []
