"""One conversion run, shared by every dataset: index -> split -> select -> encode in a pool -> parquet + report.

A dataset module only builds a `DatasetIndex` (its classes and items, with official splits when it has them); this
module does the rest identically for all of them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from data_prep.duplicates import POLICIES, apply_policy, digest_chunk, find_duplicates, group_of
from data_prep.images import VERIFY_LEVELS
from data_prep.prompts import build_question
from data_prep.report import DataPrepError, Report, dumps
from data_prep.schema import make_row
from data_prep.source import FileRef
from data_prep.splits import SPLITS, class_lists, parse_shots, select_first_valid, stratified_split, union_sorted
from data_prep.whitelist import allowed_transforms
from data_prep.writer import EncoderPool, OutputDir, RowGroupWriter, check_out_dir, default_workers

# --min-size bound: Qwen2.5-VL's default max_pixels is 12845056 = 3584 x 3584, so a larger short side is resized away
MAX_MIN_SIZE = 3584


@dataclass
class Item:
    """One image of a dataset, before encoding."""

    index: int  # stable position in the dataset (MedMNIST: row in its split's array)
    split: str  # "train" | "val" | "test", or "" before a seeded split is drawn
    label_ids: tuple[int, ...]
    source_path: str  # relative path in the dataset tree, or "<file>.npz:<key>[<row>]"
    image_path: str | None = None  # images[0]["path"] in the row
    ref: FileRef | None = None  # where a worker reads the file (None: the index streams arrays)

    @property
    def key(self) -> tuple[int, int]:
        """Sort key: split order, then index."""
        return (SPLITS.index(self.split), self.index)


@dataclass
class DatasetIndex:
    """Everything a dataset module knows before any pixel is decoded."""

    data_source: str
    domain: str
    subject: str  # "an aerial scene", ... (prompt)
    class_names: list[str]
    items: list[Item]
    split_source: str  # how the splits were made; "" = none official -> seeded stratified split
    multi_label: bool = False
    task_note: str = ""
    stream: Callable[[list[Item]], Iterator[Any]] | None = None  # payloads for items (default: item.ref)
    info: dict[str, Any] = field(default_factory=dict)
    transforms: tuple[str, ...] | None = None  # the whitelist of every row (default: allowed_transforms(data_source))

    def row_transforms(self) -> tuple[str, ...]:
        """The transform whitelist written into every row."""
        return self.transforms if self.transforms is not None else allowed_transforms(self.data_source)


@dataclass
class RunOptions:
    """The CLI options common to every dataset."""

    out: Path
    shots: Sequence[int | None] = (1, 2, 4, 8)
    seed: int = 0
    eval_per_class: int | None = None
    prompt_variant: str = "plain"
    min_size: int = 56
    verify: str = "full"
    on_error: str = "fail"
    workers: int = field(default_factory=default_workers)
    split_ratio: tuple[float, float, float] = (0.6, 0.2, 0.2)
    progress: bool = True
    row_group_rows: int = 256
    file_names: dict[str, str] = field(default_factory=dict)  # rename outputs, e.g. {"train_all": "train"}
    overwrite: bool = False  # replace the run files of another run in `out` (else refused)
    duplicates: str = "refuse"  # byte-identical images: refuse (across labels) | keep | drop (data_prep.duplicates)
    log: Callable[[str], None] | None = None  # progress lines for the user (the CLI prints them)

    @staticmethod
    def shots_from(text: str) -> list[int | None]:
        """Parse a --shots value."""
        return parse_shots(text)


def _file_name(opts: RunOptions, stem: str) -> str:
    return opts.file_names.get(stem, stem) + ".parquet"


def _payloads(index: DatasetIndex, items: list[Item]) -> Iterator[Any]:
    if index.stream is not None:
        return index.stream(items)
    return iter([it.ref for it in items])


class _Run:
    """State of one conversion (kept small: items and counts, never pixels)."""

    def __init__(self, index: DatasetIndex, opts: RunOptions, report: Report, pool: EncoderPool) -> None:
        self.index, self.opts, self.report, self.pool = index, opts, report, pool
        self.bad: set[tuple[int, int]] = set()

    def find_bad(self, items: list[Item]) -> set[int]:
        """Decode `items` (positions into the caller's list) and return the positions that fail."""
        bad = set()
        for pos, (item, enc) in enumerate(zip(items, self.pool.map(_payloads(self.index, items)))):
            if enc.data is None:
                self.report.issue(enc.error_kind, item.source_path, enc.error)
                self.bad.add(item.key)
                bad.add(pos)
        return bad

    def select(self, pool: list[Item], split: str, sizes: Sequence[int | None]) -> dict[int | None, list[Item]]:
        """For each size n: the first n usable items per class (None: the whole pool), nested across sizes."""
        out: dict[int | None, list[Item]] = {}
        labels = [it.label_ids for it in pool]
        lists = class_lists(labels, len(self.index.class_names), self.opts.seed, split)
        finite = [n for n in sizes if n is not None]
        if finite:
            chosen, _ = select_first_valid(lists, max(finite), lambda ps: self._bad_positions(pool, ps))
            for n in finite:
                out[n] = [pool[p] for p in union_sorted([members[:n] for members in chosen])]
                short = [self.index.class_names[c] for c, m in enumerate(chosen) if len(m) < n]
                if short:
                    text = f"{split}: fewer than {n} usable images for {len(short)} class(es): {short[:10]}"
                    (self.report.warn if split == "train" else self.report.note)(text)
        if None in sizes:
            out[None] = list(pool)
        return out

    def _bad_positions(self, pool: list[Item], positions: list[int]) -> set[int]:
        found = self.find_bad([pool[p] for p in positions])
        return {positions[i] for i in found}

    def write(self, outputs: dict[str, list[Item]], out: OutputDir, question: str) -> dict[str, Counter]:
        """Encode the union of all outputs once and route each row to every file that holds it.

        Returns per file a Counter of label ids, with the row count under the key "rows".
        """
        index, opts = self.index, self.opts
        members: dict[tuple[int, int], list[str]] = {}
        for name, items in outputs.items():
            for it in items:
                members.setdefault(it.key, []).append(name)
        union = sorted({it.key: it for items in outputs.values() for it in items}.values(), key=lambda it: it.key)
        union = [it for it in union if it.key not in self.bad]
        writers = {name: RowGroupWriter(out.path(name), opts.row_group_rows) for name in outputs}
        counts = {name: Counter() for name in outputs}
        transforms = index.row_transforms()
        bar = tqdm(total=len(union), desc=f"{index.data_source}", unit="img", disable=not opts.progress)
        for item, enc in zip(union, self.pool.map(_payloads(index, union))):
            bar.update(1)
            if enc.data is None:
                self.report.issue(enc.error_kind, item.source_path, enc.error)
                continue
            self.report.add_image(enc.conversions, enc.width, enc.height)
            row = make_row(
                data_source=index.data_source,
                question=question,
                image_bytes=enc.data,
                image_path=item.image_path,
                domain=index.domain,
                label_ids=item.label_ids,
                class_names=index.class_names,
                multi_label=index.multi_label,
                transforms=transforms,
                prompt_variant=opts.prompt_variant,
                split=item.split,
                index=item.index,
                source_path=item.source_path,
            )
            for name in members[item.key]:
                writers[name].add(row)
                counts[name].update(item.label_ids)
                counts[name]["rows"] += 1
        bar.close()
        for w in writers.values():
            w.close()
        return counts


def _per_class(counter: Counter, class_names: Sequence[str]) -> dict[str, int]:
    return {name: int(counter.get(c, 0)) for c, name in enumerate(class_names)}


def assign_seeded_split(
    index: DatasetIndex, opts: RunOptions, follow: dict[int, Item] | None = None
) -> dict[str, list[str]]:
    """Draw a seeded stratified split for an index without an official one; return {split: [source_path...]}.

    `follow`: {id(copy): first item of its duplicate group}; copies take their first item's split, so every copy of
    an image lands in one split (without duplicates the split is the plain stratified one).
    """
    follow = follow or {}
    drawn = [it for it in index.items if id(it) not in follow]
    names = stratified_split([it.label_ids[0] for it in drawn], len(index.class_names), opts.split_ratio, opts.seed)
    for item, split in zip(drawn, names):
        item.split = split
    for item in index.items:
        if id(item) in follow:
            item.split = follow[id(item)].split
    index.split_source = "seeded stratified split {:g}/{:g}/{:g} (seed {})".format(*opts.split_ratio, opts.seed)
    return {s: [it.source_path for it in index.items if it.split == s] for s in SPLITS}


def source_line(index: DatasetIndex) -> str:
    """One line saying what is read: the class root of a folder dataset, the npz of MedMNIST, else the source."""
    info, n = index.info, len(index.items)
    if "class_root" in info:
        where = Path(info["root"]) / info["class_root"]
        return f"{index.data_source}: class root: {where} ({info['class_folders']} class folders, {n} images)"
    if "npz" in info:
        return f"{index.data_source}: reading {Path(info['root']) / info['npz']} ({n} images)"
    return f"{index.data_source}: reading {info.get('source') or info.get('root', '?')} ({n} images)"


def _check_options(opts: RunOptions) -> None:
    if opts.seed < 0:
        raise DataPrepError(f"--seed must be a non-negative integer, got {opts.seed}")
    if opts.verify not in VERIFY_LEVELS:
        raise DataPrepError(f"--verify must be one of {VERIFY_LEVELS}, got {opts.verify!r}")
    if opts.duplicates not in POLICIES:
        raise DataPrepError(f"--duplicates must be one of {POLICIES}, got {opts.duplicates!r}")
    if not 0 <= opts.min_size <= MAX_MIN_SIZE:
        raise DataPrepError(f"--min-size must be between 0 and {MAX_MIN_SIZE}, got {opts.min_size}")


def _skipped(report: Report) -> str:
    by_reason = report.to_dict()["skipped"]["by_reason"]
    return f"skipped: {by_reason}" if by_reason else "nothing skipped"


def _check_pools(index: DatasetIndex, opts: RunOptions, pools: dict[str, list[Item]], report: Report) -> None:
    """An empty train split is an error; an empty val/test split a warning (a note when --split-ratio asked for it)."""
    seeded = index.split_source.startswith("seeded")
    if not pools["train"]:
        why = "--split-ratio gives train 0" if seeded and opts.split_ratio[0] == 0 else _skipped(report)
        raise DataPrepError(f"{index.data_source}: the train split is empty ({why}); nothing written")
    for s, split in enumerate(SPLITS[1:], start=1):
        if not pools[split]:
            asked = seeded and opts.split_ratio[s] == 0
            (report.note if asked else report.warn)(f"no {split} split: {split}.parquet not written")


def _os_error_text(exc: OSError) -> str:
    text = exc.strerror or str(exc)
    return f"{text}: {exc.filename}" if exc.filename else text


def convert(build: Callable[[Report], DatasetIndex], opts: RunOptions) -> dict[str, Any]:
    """Run one conversion: `build(report)` indexes the dataset; returns the report written to report.json.

    `--out` is locked first (a second run on it fails at once). Every failure is a `DataPrepError` with a one-line
    message (OSErrors of the output folder included); whatever ends the run early (an error, Ctrl-C, SIGTERM) removes
    the temporary folder and the folders made for `--out`, and stops the pool.
    """
    _check_options(opts)
    out_path = Path(opts.out)
    try:
        out = OutputDir(out_path, log=opts.log)
    except OSError as exc:
        raise DataPrepError(f"--out {out_path}: cannot write ({_os_error_text(exc)}); nothing written") from exc
    try:
        with EncoderPool(opts.workers, opts.min_size, opts.verify) as pool:  # its workers start while `build` indexes
            return _convert(build, opts, pool, out)
    except BrokenProcessPool as exc:
        out.abort()
        raise DataPrepError("a decode worker died (killed by the system, out of memory?); nothing written") from exc
    except OSError as exc:  # writing the output (reading the input fails per image, as a counted reason)
        out.abort()
        raise DataPrepError(f"--out {out_path}: cannot write ({_os_error_text(exc)}); nothing written") from exc
    except BaseException:
        out.abort()
        raise


def _dedupe(index: DatasetIndex, opts: RunOptions, pool: EncoderPool, report: Report) -> dict[int, Item]:
    """Find byte-identical images, apply `--duplicates` (index.items may shrink); returns the copies' split leaders."""
    groups = find_duplicates(index.items, _payloads(index, index.items), lambda ps: pool.map(ps, digest_chunk))
    index.items, summary = apply_policy(index.items, groups, opts.duplicates, index.class_names, report)
    index.info["duplicates"] = summary
    return group_of(groups) if opts.duplicates != "drop" else {}


def _convert(
    build: Callable[[Report], DatasetIndex], opts: RunOptions, pool: EncoderPool, out: OutputDir
) -> dict[str, Any]:
    """`convert` with a started pool and a locked output folder."""
    report = Report(opts.on_error)
    index = build(report)
    if not index.items:
        raise DataPrepError(f"{source_line(index)}: no usable images ({_skipped(report)})")
    if opts.log:
        opts.log(source_line(index))
    identity = {
        "dataset": index.data_source,
        "seed": opts.seed,
        "shots": ["all" if k is None else k for k in opts.shots],
    }
    out.stale = check_out_dir(out.out, identity, opts.overwrite)
    follow = _dedupe(index, opts, pool, report)
    seeded = None if index.split_source else assign_seeded_split(index, opts, follow)
    pools = {s: sorted((it for it in index.items if it.split == s), key=lambda it: it.key) for s in SPLITS}
    _check_pools(index, opts, pools, report)
    if seeded is not None:
        out.write_text("splits.json", dumps(seeded))
    files = _write_files(index, opts, pools, report, out, pool)
    result = _result(index, opts, identity, pools, files, report)
    out.write_text("report.json", dumps(result))
    out.commit()
    return result


def _write_files(
    index: DatasetIndex,
    opts: RunOptions,
    pools: dict[str, list[Item]],
    report: Report,
    out: OutputDir,
    pool: EncoderPool,
) -> dict[str, Counter]:
    """Select and write every parquet file; returns per written file a Counter of label ids (+ "rows")."""
    question = build_question(
        dataset=index.data_source,
        subject=index.subject,
        class_names=index.class_names,
        multi_label=index.multi_label,
        variant=opts.prompt_variant,
        task_note=index.task_note,
    )
    run = _Run(index, opts, report, pool)
    outputs: dict[str, list[Item]] = {}
    for k, items in run.select(pools["train"], "train", opts.shots).items():
        outputs[_file_name(opts, f"train_{k}shot" if k else "train_all")] = items
    train_files = set(outputs)
    for split in ("val", "test"):
        if pools[split]:
            cap = opts.eval_per_class
            outputs[_file_name(opts, split)] = run.select(pools[split], split, [cap])[cap]
    for name, items in outputs.items():
        outputs[name] = [it for it in items if it.key not in run.bad]
    counts = run.write(outputs, out, question)
    for name in list(counts):
        if counts[name]["rows"]:
            continue
        if name in train_files:
            raise DataPrepError(f"{name} has no rows: every image picked for it failed ({_skipped(report)})")
        report.warn(f"{name} has no rows (every image of its split failed): not written")
        out.drop(name)
        del counts[name]
    return counts


def _result(
    index: DatasetIndex,
    opts: RunOptions,
    identity: dict[str, Any],
    pools: dict[str, list[Item]],
    files: dict[str, Counter],
    report: Report,
) -> dict[str, Any]:
    """The content of report.json."""
    return {
        "dataset": identity["dataset"],
        "domain": index.domain,
        "seed": identity["seed"],
        "shots": identity["shots"],
        "eval_per_class": opts.eval_per_class,
        "prompt_variant": opts.prompt_variant,
        "min_size": opts.min_size,
        "verify": opts.verify,
        "on_error": opts.on_error,
        "split_source": index.split_source,
        **index.info,
        "class_names": index.class_names,
        "transforms": list(index.row_transforms()),
        "splits": {
            s: {
                "total": len(p),
                "per_class": _per_class(Counter(c for it in p for c in it.label_ids), index.class_names),
            }
            for s, p in pools.items()
        },
        "files": {
            name: {"rows": c["rows"], "per_class": _per_class(c, index.class_names)} for name, c in files.items()
        },
        **report.to_dict(),
    }
