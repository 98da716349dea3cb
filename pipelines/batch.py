"""Batch stylization: many content pictures, one style and one set of parameters, into an output folder.

>>> from pipelines.batch import stylize_batch
>>> summary = stylize_batch(["photos/", "more/*.jpg"], "painting.jpg", "out/", method="fast", strength=0.7)
>>> summary.line()   # '16 pictures: 15 done, 0 skipped, 1 failed in 4.1 s (3.7/s); manifest out/manifest.jsonl'

Each input becomes ``OUT_DIR/<its name>.png`` (a name taken by another input gets ``-2``, ``-3``, …; a name a
previous run gave an input stays that input's). ``OUT_DIR/manifest.jsonl`` is an append-only log, one JSON line
per input and run: ``status`` is ``done`` (the picture was made), ``failed`` (``error`` says why; the others go
on) or ``skipped`` (an earlier run's ``done`` line, for the same parameters and style, still has its output file:
nothing was made again, and ``output``/``parameters`` are that earlier line's). A rerun therefore resumes: it skips
what is done and retries what failed; the latest line of an input is its state (``read_manifest(latest=True)``).
A cancelled run writes no line for the pictures it did not finish, so the next run makes them.

Locally, the ``fast`` method has several pictures in flight (its ONNX engine serves concurrent calls); the
diffusion methods run one at a time (one model on one device). With the ``modal`` backend the batch fans out over
the deployed app's containers and results are written as they arrive, in whatever order they finish.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipelines.core.context import StudioContext, default_context
from pipelines.core.errors import GenerationCancelled, ImageInputError, InvalidRequestError, describe_error
from pipelines.core.images import load_image
from pipelines.core.method import ProgressCallback, StyleMethod
from pipelines.core.request import StyleRequest
from pipelines.core.result import StyleResult
from pipelines.core.studio import resolve_method, run_here

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.jsonl"
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
# Methods whose loaded model serves several pictures at once in one process (the fast ONNX engine). The diffusion
# pipelines keep per-call state (their scheduler), so they take one picture at a time.
CONCURRENT_METHODS = frozenset({"fast"})
MAX_LOCAL_WORKERS = 4  # measured best on 2 CPUs (6 was no faster); more only queue for the same cores
STATUSES = ("done", "failed", "skipped")


# ---- inputs -------------------------------------------------------------------------------------------------


def expand_inputs(
    patterns: Iterable[str | os.PathLike[str]],
    recursive: bool = False,
    *,
    exclude: str | os.PathLike[str] | None = None,
) -> list[Path]:
    """The files named by ``patterns``, in order, each once.

    A file is taken as given (a file that is not an image is reported on its manifest line later); a folder gives
    its image files (sorted by name; its subfolders too with ``recursive``); anything else is a glob (``*``,
    ``?``, ``[…]``, ``**``), which gives the image files it matches. Files under ``exclude`` (the output folder)
    are never taken from a folder or glob. A pattern that names nothing is an error, so a typo does not pass as
    an empty batch.
    """
    excluded = Path(exclude).resolve() if exclude is not None else None
    found: dict[Path, Path] = {}  # resolved path (one entry per file) -> the path as named (a link keeps its name)
    for pattern in patterns:
        path = Path(pattern).expanduser()
        if path.is_file():
            matches = [path]
        elif path.is_dir():
            candidates = path.rglob("*") if recursive else path.iterdir()
            matches = sorted(p for p in candidates if _is_image_file(p, excluded))
        elif glob.has_magic(str(pattern)):
            paths = (Path(p) for p in glob.glob(str(path), recursive=True))
            matches = sorted(p for p in paths if _is_image_file(p, excluded))
        else:
            raise InvalidRequestError(f"{pattern} was not found. Check the path (a file, a folder or a glob).")
        if not matches:
            what = "folder" if path.is_dir() else "glob"
            raise InvalidRequestError(
                f"The {what} {pattern} has no images ({', '.join(sorted(IMAGE_SUFFIXES))})"
                + ("." if recursive or not path.is_dir() else "; add --recursive to look in its subfolders.")
            )
        for match in matches:
            found.setdefault(match.resolve(), Path(os.path.abspath(match)))
    return list(found.values())


def _is_image_file(path: Path, excluded: Path | None) -> bool:
    if path.name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
        return False
    return excluded is None or not path.resolve().is_relative_to(excluded)


def output_names(inputs: list[Path], taken: dict[Path, str]) -> dict[Path, str]:
    """Each input's output file name: an input that already has one (``taken``, from the manifest) keeps it; the
    others get ``<stem>.png``, or ``<stem>-2.png``, ``-3``, … when an earlier input (or a previous run) has that
    name. Names are compared without case, so no two outputs collide on a case-insensitive disk either."""
    wanted = set(inputs)
    names = {path: name for path, name in taken.items() if path in wanted}
    used = {name.lower() for name in taken.values()}
    for path in inputs:
        if path in names:
            continue
        name, number = f"{path.stem}.png", 1
        while name.lower() in used:
            number += 1
            name = f"{path.stem}-{number}.png"
        names[path] = name
        used.add(name.lower())
    return names


# ---- the manifest -------------------------------------------------------------------------------------------


def read_manifest(out_dir: str | os.PathLike[str], *, latest: bool = False) -> list[dict[str, Any]]:
    """The manifest's lines in the order they were written (none when there is no manifest yet); with ``latest``,
    only each input's most recent line (its current state), in the order inputs first appeared. A line cut short
    (the process was killed while writing it) is left out."""
    path = Path(out_dir) / MANIFEST_NAME
    if not path.is_file():
        return []
    records = []
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError:
            logger.warning("%s line %d is not JSON (cut short?); ignored", path, number)
            continue
        if isinstance(record, dict) and "input" in record and record.get("status") in STATUSES:
            records.append(record)
    if not latest:
        return records
    newest: dict[str, dict[str, Any]] = {}
    for record in records:
        newest[record["input"]] = record  # a dict keeps first-insertion order, with the last value
    return list(newest.values())


class _Manifest:
    """The manifest file, appended one flushed line at a time (so a crash loses at most the line being written);
    safe to call from several threads, and it keeps the run's tallies."""

    def __init__(self, path: Path, total: int, progress: ProgressCallback | None) -> None:
        self.path = path
        self.total = total
        self.counts = dict.fromkeys(STATUSES, 0)
        self.failures: list[tuple[str, str]] = []
        self._progress = progress
        self._lock = threading.Lock()
        self._file = path.open("a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        with self._lock:
            self._file.write(json.dumps(record, default=str) + "\n")
            self._file.flush()
            self.counts[record["status"]] += 1
            if record["status"] == "failed":
                self.failures.append((record["input"], record["error"]))
            finished = sum(self.counts.values())
            if self._progress is not None:
                self._progress(finished, self.total, f"{Path(record['input']).name} {record['status']}")

    def close(self) -> None:
        self._file.close()


# ---- the summary --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchSummary:
    """What one ``stylize_batch`` run did. ``not_run``: inputs left without a line because the run was cancelled."""

    out_dir: Path
    manifest: Path
    total: int
    done: int
    skipped: int
    failed: int
    not_run: int
    seconds: float
    workers: int  # pictures in flight at once on this machine (0: fanned out to the remote backend)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (input, error) of each failed input

    @property
    def ok(self) -> bool:
        """Every input has its picture (made now or by an earlier run)."""
        return self.done + self.skipped == self.total

    def line(self) -> str:
        """One line for people, e.g. ``16 pictures: 15 done, 0 skipped, 1 failed in 4.1 s (3.7/s); manifest …``."""
        rate = f" ({self.done / self.seconds:.1f}/s)" if self.done and self.seconds > 0 else ""
        cut = f", {self.not_run} not run (cancelled)" if self.not_run else ""
        return (
            f"{self.total} picture{'s' if self.total != 1 else ''}: {self.done} done, {self.skipped} skipped, "
            f"{self.failed} failed{cut} in {self.seconds:.1f} s{rate}; manifest {self.manifest}"
        )


# ---- the batch ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Job:
    input: Path  # absolute
    output: Path


def default_workers(method: str, cpu_count: int | None = None) -> int:
    """Pictures in flight at once on this machine: for a method whose model serves concurrent calls
    (``CONCURRENT_METHODS``) two per CPU, up to ``MAX_LOCAL_WORKERS`` (much of a fast picture's time is decoding,
    resizing and PNG encoding, which overlaps another picture's network run: bench/results/batch_cpu.json);
    one for the others."""
    if method not in CONCURRENT_METHODS:
        return 1
    return max(1, min(MAX_LOCAL_WORKERS, 2 * (cpu_count or os.cpu_count() or 1)))


def stylize_batch(
    inputs: Iterable[str | os.PathLike[str]],
    style: str | os.PathLike[str] | bytes | None,
    out_dir: str | os.PathLike[str],
    *,
    context: StudioContext | None = None,
    workers: int | None = None,
    recursive: bool = False,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    **request_params: Any,
) -> BatchSummary:
    """Stylize every picture named by ``inputs`` (files, folders, globs: see ``expand_inputs``) with ``style``
    into ``out_dir``, resuming what an earlier run there left (see the module docstring for the manifest).

    ``request_params``: the request's parameters (``method``, ``strength``, ``steps``, ``seed``, ``max_side``,
    ``preserve_color``, ``options``), the same for every picture. ``workers``: pictures in flight at once on
    this machine (default ``default_workers(method)``; methods outside ``CONCURRENT_METHODS`` always take one
    at a time). ``progress(finished, total, text)`` is called as each input gets its line; setting ``cancel``
    stops the batch (pictures under way stop at their next step). Problems with a picture go on its line; a
    problem with the request itself (a bad parameter, an unreadable style) raises before anything runs.
    """
    started = time.perf_counter()
    context = context or default_context()
    out_dir = Path(out_dir)
    cancel = cancel or threading.Event()

    # 1. Check everything shared by the pictures once, before any of them runs.
    files = expand_inputs(inputs, recursive, exclude=out_dir)
    template, method, style_id = _checked_request(style, request_params, context)
    remote = context.backend == "modal"
    if not remote:
        workers = _local_workers(method, workers)

    # 2. Plan: what an earlier run finished is skipped, the rest (new, failed, other parameters) is made.
    out_dir.mkdir(parents=True, exist_ok=True)
    request_id = _request_id(template, style_id)
    records = read_manifest(out_dir)
    previous = {Path(r["input"]): r for r in records}  # each input's latest line
    names = output_names(files, {Path(r["input"]): Path(r["output"]).name for r in records if r.get("output")})
    skipped, jobs = [], []
    for path in files:
        job = _Job(path, out_dir / names[path])
        earlier = previous.get(path)
        finished = earlier is not None and earlier["status"] in ("done", "skipped")
        if finished and earlier.get("request_id") == request_id and job.output.is_file():
            skipped.append((job, earlier))
        else:
            jobs.append(job)

    # 3. Make the pictures, writing each one's line as it finishes.
    manifest = _Manifest(out_dir / MANIFEST_NAME, len(files), progress)
    line = _LineMaker(template, style, request_id)
    try:
        for job, earlier in skipped:
            manifest.write(line.skipped(job, earlier))
        if remote:
            _run_remote(jobs, template, line, manifest, cancel)
        else:
            _run_local(jobs, template, line, manifest, context, workers, cancel)
    finally:
        manifest.close()
    counts = manifest.counts
    return BatchSummary(
        out_dir=out_dir,
        manifest=manifest.path,
        total=len(files),
        done=counts["done"],
        skipped=counts["skipped"],
        failed=counts["failed"],
        not_run=len(files) - sum(counts.values()),
        seconds=round(time.perf_counter() - started, 3),
        workers=0 if remote else workers,
        failures=manifest.failures,
    )


def _checked_request(
    style: str | os.PathLike[str] | bytes | None, request_params: dict[str, Any], context: StudioContext
) -> tuple[StyleRequest, StyleMethod, str | None]:
    """The request every picture shares (the style read once, as bytes), its method, and the style's digest."""
    style_bytes = None
    if style is not None:
        if isinstance(style, (bytes, bytearray)):
            style_bytes = bytes(style)
        else:
            try:
                style_bytes = Path(style).read_bytes()
            except OSError as exc:
                raise ImageInputError(
                    f"The style image {style} could not be read ({exc.strerror}). Check the path."
                ) from None
    try:
        template = StyleRequest(content=b"", style=style_bytes, **request_params)
    except TypeError:
        unknown = sorted(set(request_params) - {f.name for f in dataclasses.fields(StyleRequest)})
        raise InvalidRequestError(f"Unknown request parameter(s): {', '.join(unknown)}.") from None
    method = resolve_method(template.method, context)
    method.check_options(template.options)
    if method.uses_style_image:
        if style_bytes is None:
            raise InvalidRequestError(f"The {method.name} method needs a style image: give one (--style).")
        load_image(style_bytes, role="style", max_side=template.max_side)  # a bad style fails here, not 16 times
    style_id = hashlib.sha256(style_bytes).hexdigest()[:16] if style_bytes is not None else None
    return template, method, style_id


def _local_workers(method: StyleMethod, workers: int | None) -> int:
    if workers is None:
        return default_workers(method.name)
    if workers < 1:
        raise InvalidRequestError(f"workers must be 1 or more; got {workers}.")
    if workers > 1 and method.name not in CONCURRENT_METHODS:
        logger.warning(
            "%s makes one picture at a time (one model on one device); ignoring workers=%d", method.name, workers
        )
        return 1
    return workers


def _request_id(template: StyleRequest, style_id: str | None) -> str:
    """A short fingerprint of the parameters as asked and the style's bytes: a done line counts for a rerun only
    when it was made for the same request."""
    asked = json.dumps({**template.parameters(), "style": style_id}, sort_keys=True, default=str)
    return hashlib.sha256(asked.encode()).hexdigest()[:16]


class _LineMaker:
    """The manifest line of each outcome (every line has the same fields)."""

    def __init__(self, template: StyleRequest, style: Any, request_id: str) -> None:
        self.asked = template.parameters()
        self.style = str(Path(style).resolve()) if isinstance(style, (str, os.PathLike)) else None
        self.request_id = request_id

    def _line(self, job: _Job, status: str, **values: Any) -> dict[str, Any]:
        line = {"input": str(job.input), "status": status, "output": None, "error": None, "parameters": self.asked}
        line.update(seconds=None, style=self.style, request_id=self.request_id)
        line.update(values)
        line["at"] = datetime.now(UTC).isoformat(timespec="seconds")
        return line

    def done(self, job: _Job, result: StyleResult, seconds: float) -> dict[str, Any]:
        return self._line(
            job, "done", output=str(job.output), parameters=result.metadata.parameters, seconds=round(seconds, 3)
        )

    def failed(self, job: _Job, error: BaseException | str, seconds: float | None = None) -> dict[str, Any]:
        message = error if isinstance(error, str) else describe_error(error, "python")
        return self._line(job, "failed", error=message, seconds=None if seconds is None else round(seconds, 3))

    def skipped(self, job: _Job, earlier: dict[str, Any]) -> dict[str, Any]:
        return self._line(job, "skipped", output=str(job.output), parameters=earlier.get("parameters"), seconds=0.0)


def _run_local(
    jobs: list[_Job],
    template: StyleRequest,
    line: _LineMaker,
    manifest: _Manifest,
    context: StudioContext,
    workers: int,
    cancel: threading.Event,
) -> None:
    """Up to ``workers`` pictures at once in this process; a few more queued, so no worker waits for the next."""

    def make(job: _Job) -> dict[str, Any] | None:
        began = time.perf_counter()
        try:
            result = run_here(dataclasses.replace(template, content=job.input), context=context, cancel=cancel)
            result.save(job.output)
        except GenerationCancelled:
            return None  # no line: the next run makes it
        except Exception as exc:  # one bad picture (or a bug on it) is its line; the others go on
            if cancel.is_set():
                return None
            return line.failed(job, exc, time.perf_counter() - began)
        return line.done(job, result, time.perf_counter() - began)

    waiting: Iterator[_Job] = iter(jobs)
    running: set[Future] = set()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="batch") as pool:
        try:
            while True:
                while len(running) < 2 * workers and not cancel.is_set() and (job := next(waiting, None)):
                    running.add(pool.submit(make, job))
                if not running:
                    return
                finished, running = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    if (record := future.result()) is not None:
                        manifest.write(record)
        except BaseException:  # Ctrl-C: stop the pictures under way, keep the lines of those that finished
            cancel.set()
            for future in running:
                if not future.cancel() and (record := future.result()) is not None:
                    manifest.write(record)
            raise


def _run_remote(
    jobs: list[_Job], template: StyleRequest, line: _LineMaker, manifest: _Manifest, cancel: threading.Event
) -> None:
    """Fan out over the deployed Modal app; each line is written as its picture comes back (in any order)."""
    from pipelines.backends import ModalBackend

    by_key = {str(index): job for index, job in enumerate(jobs)}
    unanswered = dict(by_key)

    def requests() -> Iterator[tuple[str, StyleRequest]]:
        for key, job in by_key.items():
            if cancel.is_set():
                return
            try:
                content = job.input.read_bytes()  # here, so an unreadable file is its own line, not the batch's
            except OSError as exc:
                unanswered.pop(key)
                manifest.write(line.failed(job, f"{job.input.name} could not be read ({exc.strerror})."))
                continue
            yield key, dataclasses.replace(template, content=content)

    lost: list[str] = []  # failures Modal could not tie to their picture (a container died, say)
    for key, outcome in ModalBackend().stylize_many(requests(), cancel=cancel):
        job = unanswered.pop(key, None) if key is not None else None
        if job is None:
            lost.append(describe_error(outcome) if isinstance(outcome, BaseException) else str(outcome))
        elif isinstance(outcome, StyleResult):
            outcome.save(job.output)
            manifest.write(line.done(job, outcome, outcome.metadata.timings.total_s))
        else:
            manifest.write(line.failed(job, outcome))
    if cancel.is_set():
        return  # the unanswered pictures get no line: the next run makes them
    for job in unanswered.values():
        reason = lost[0] if lost else "The remote GPU returned no result for this picture."
        manifest.write(line.failed(job, reason))
