"""The engine's one entry point: bytes, a file or an array in; a typed ScanResult out."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from worker.engine.cascade import Findings, Stage, StageContext, Want
from worker.engine.deadline import Deadline
from worker.engine.errors import DeadlineReached, ErrorCode, ScanFailed
from worker.engine.images import DecodeClock, Document, document_from_array, open_document
from worker.engine.results import ScanError, ScanResult, Unread, UnreadReason
from worker.engine.stages import DetectorStage, FastStage, ThoroughStage, ZoomStage
from worker.settings import Settings

Input = bytes | bytearray | memoryview | np.ndarray | os.PathLike[str]


def default_stages(settings: Settings, born_digital_rules: bool = True) -> list[Stage]:
    """fast, then each configured detector (small before medium), then thorough, then the
    first detector's zoomed look (worker.engine.stages.zoom) at what is still open.

    The detectors come before the thorough pass: one small-model inference costs a few
    milliseconds, a thorough pass over a 12 MP photo hundreds. `born_digital_rules` False
    reads born-digital PDF pages as any other (worker.engine.stages.born_digital; the
    benchmark's comparison).
    """
    detectors = settings.backend != "none" and bool(settings.detector_models)
    # With a detector next, a photo the fast pass read codes on gets the small model's look
    # (a few ms) for codes it could not locate; without one, that look would be the
    # thorough pass, far too dear for every photo.
    stages: list[Stage] = [
        FastStage(look_again_at_photos=detectors),
        ThoroughStage(born_digital_rules=born_digital_rules),
    ]
    if detectors:
        from worker.engine.detector.detector import Detector

        for rank, size in enumerate(settings.detector_models):
            detector = Detector.load(size, settings)
            # The first detector's doubts go to the next one's look (stages.detect).
            refined = rank + 1 < len(settings.detector_models)
            stages.append(DetectorStage(detector, 2.0 + rank, born_digital_rules, refined))
            if rank == 0:
                # The first (cheapest) model also takes the last look, at more pixels, at
                # the photos every other stage read nothing on (worker.engine.stages.zoom).
                stages.append(ZoomStage(detector))
    return stages


class Engine:
    """Reads every QR code in an image or document.

    Build one per process and reuse it: it holds the stages and the detector sessions,
    loaded once. `scan` may run in several threads at once (the HTTP shim does): stages
    keep no per-scan state, and ONNX Runtime and PyTorch inference are thread-safe.
    """

    def __init__(
        self, settings: Settings | None = None, stages: Sequence[Stage] | None = None
    ) -> None:
        self.settings = settings or Settings.from_env()
        # Process-wide: one engine per process (tests/test_engine_threads.py says why).
        cv2.setNumThreads(self.settings.image_threads)
        chosen = list(stages) if stages is not None else default_stages(self.settings)
        self.stages: list[Stage] = sorted(chosen, key=lambda s: s.cost)
        # Every detector after the first refines its look: on a page the first found blank
        # (and zxing located nothing on) the medium model read one code in 1650 benchmark
        # pages, at the cost of the dearest inference in the cascade.
        detectors = [s for s in self.stages if isinstance(s, DetectorStage)]
        self._refiners = {id(s) for s in detectors[1:]}

    def warm_up(self) -> None:
        """Run every decode path once, so first-call costs (codec plugins, PDFium, zxing
        tables, allocator growth) are paid at start-up. Worker processes fork a work-horse
        per job from a warmed parent, so no job pays them."""
        import cv2

        page = np.full((96, 96), 255, np.uint8)
        page[24:72, 24:72] = 0
        for extension in (".png", ".jpg", ".webp", ".bmp"):
            self.scan(cv2.imencode(extension, page)[1].tobytes(), deadline_ms=0)
        if self.settings.pdf_child:
            from worker.engine import isolation

            isolation.warm_up(self.settings)  # the renderer child, started once
        else:
            import pypdfium2  # noqa: F401  (only loaded on first PDF otherwise)

    def scan(
        self, data: Input, *, deadline_ms: int | None = None, want: Want | None = None
    ) -> ScanResult:
        """Scan `data` (file bytes, a path, or a uint8 grayscale/BGR/BGRA array).

        `deadline_ms` bounds the whole scan (the settings' default when None, no bound
        when 0); `want="first"` stops at the first code read. Failures never raise:
        they come back as `result.error` with a stable code.
        """
        deadline = Deadline(self.settings.deadline_ms if deadline_ms is None else deadline_ms)
        want = want or self.settings.want  # type: ignore[assignment]
        if want not in ("all", "first"):
            raise ValueError(f"want must be 'all' or 'first', not {want!r}")
        result = ScanResult()
        decoded = self._scan(data, deadline, want, result)
        # The document's pages are freed by now; give their memory back to the OS too.
        if decoded >= _RETURN_MEMORY_AFTER_PIXELS:
            return_memory_to_os()
        result.timings_ms["total"] = deadline.elapsed_ms()
        return result

    def _scan(self, data: Input, deadline: Deadline, want: Want, result: ScanResult) -> int:
        """Fill `result`; return how many pixels were decoded. Every page of the document
        is unreferenced when this returns."""
        timings = result.timings_ms
        clock = DecodeClock()
        document: Document | None = None
        try:
            if isinstance(data, np.ndarray):
                timings["read"] = 0.0
                document = document_from_array(data, self.settings)
                clock = document.clock
            else:
                started = time.perf_counter()
                raw = _read_bytes(data, self.settings)
                timings["read"] = (time.perf_counter() - started) * 1000.0
                document = clock.timed(lambda: open_document(raw, self.settings, clock, deadline))
            result.format = document.format
            result.width, result.height, result.pages = (
                document.width,
                document.height,
                len(document.pages),
            )
            result.page_kinds = [page.kind for page in document.pages if page.kind is not None]
            self._run_stages(document, deadline, want, result)
        except ScanFailed as failure:
            result.error = ScanError(failure.code, failure.message)
        timings["decode_image"] = clock.ms
        return document.decoded_pixels if document is not None else 0

    def _run_stages(
        self, document: Document, deadline: Deadline, want: Want, result: ScanResult
    ) -> None:
        findings = Findings()
        ctx = StageContext(document, self.settings, deadline, want, findings)
        clock = document.clock
        stopped: str | None = None  # why a decode was not made in time, when one was not
        for stage in self.stages:
            if findings.satisfied(want, len(document.pages)):
                break
            if deadline.expired():
                result.complete = False
                break
            decode_before = clock.ms
            started = time.perf_counter()
            asked = findings.looks_asked()
            stage_ctx = replace(ctx, skip_blind_pages=True) if id(stage) in self._refiners else ctx
            try:
                stage.run(stage_ctx)
            except DeadlineReached as reached:
                # The deadline passed while a page was waiting to be decoded, or the decode
                # would have outlasted it: stop here, and say which.
                result.complete = False
                stopped = str(reached)
            # One more look is all a page asks for: the stage after the asking one gave it.
            findings.looks_taken(asked)
            spent = (time.perf_counter() - started) * 1000.0
            # Decoding that a stage triggered is reported as decode_image, not as the stage.
            result.timings_ms[stage.name] = spent - (clock.ms - decode_before)
            result.stages_run.append(stage.name)
            if not result.complete:
                break
        else:
            if deadline.expired() and not findings.satisfied(want, len(document.pages)):
                result.complete = False
        # One zxing pass can return several codes at once; "first" promises exactly one.
        result.codes = findings.codes[:1] if want == "first" else findings.codes
        if not result.complete and not result.codes:
            why = stopped or f"the deadline of {deadline.budget_ms:g} ms passed"
            stages = ", ".join(result.stages_run) or "none"
            message = f"{why}; no code was read (stages run: {stages})"
            raise ScanFailed(ErrorCode.DEADLINE_EXCEEDED, message)
        if want == "all":
            # Complete means complete: a symbol located and not read is reported, never
            # dropped; the deadline cut it short, or every stage failed on it (then the
            # scan is a success, with or without codes, that says what it could not read).
            reason = UnreadReason.NOT_DECODED if result.complete else UnreadReason.DEADLINE
            result.unread = [
                Unread(quad, page.index, reason, by)
                for page in document.pages
                for quad, by in findings.unread(page.index)
            ] + [
                Unread(quad, page.index, UnreadReason.RULED_OUT, "detector")
                for page in document.pages
                for quad in findings.ruled_out(page.index)
            ]
            # A box ruled out is named, but it is no code left unread (docs/protocol.md).
            if any(u.reason is not UnreadReason.RULED_OUT for u in result.unread):
                result.complete = False


# A scan that decoded this many pixels (a phone photo at full size) has grown the heap by
# tens of MB. The shim scans in many threads, each with its own glibc arena that would
# keep its share; trimming when there is nothing to give back costs microseconds.
_RETURN_MEMORY_AFTER_PIXELS = 4_000_000


def _load_malloc_trim() -> ctypes._CFuncPtr | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        return None


_MALLOC_TRIM = _load_malloc_trim()


def return_memory_to_os() -> None:
    """Hand the free memory of the C heap back to the OS.

    glibc keeps freed blocks in its arenas: Pillow's 16 MB image blocks and numpy arrays
    under the mmap threshold (which grows to 32 MB after the first large free) stay
    resident after a large document, and a shim would sit at its peak for good.
    malloc_trim(0) releases them; it is thread-safe and takes a few milliseconds.
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def _read_bytes(
    data: bytes | bytearray | memoryview | os.PathLike[str], settings: Settings
) -> bytes:
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data)
    path = Path(data)
    try:
        size = path.stat().st_size
        if size > settings.max_bytes:
            raise ScanFailed(
                ErrorCode.IMAGE_TOO_LARGE,
                f"{path} is {size} bytes; the limit is {settings.max_bytes} (QRW_MAX_BYTES)",
            )
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise ScanFailed(ErrorCode.NOT_FOUND, f"{path} does not exist") from exc
    except OSError as exc:
        raise ScanFailed(ErrorCode.READ_FAILED, f"{path} cannot be read: {exc.strerror}") from exc
