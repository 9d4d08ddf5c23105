"""The general guard: PDFium runs in a child process that is limited and can be killed.

Some native decoders cannot be bounded from outside while they run in our process: a
PDF page's content is parsed whole, in one call, holding whatever the file inflates to.
Cheap checks catch the cases we know (worker.engine.pdf); for the rest, documents are
opened and rendered in a child process that
- has an address-space limit (RLIMIT_AS, QRW_PDF_CHILD_MEMORY_MB): an allocation past it
  fails, PDFium aborts, and the document gets image_too_large while the worker lives on;
- is SIGKILLed when the scan's deadline passes while it works: deadline_exceeded, at once;
- is reused between documents (starting one costs about 0.1 s, a scan of a digital PDF
  a few ms) and respawned when it died or was killed;
- belongs to the process that started it: it exits when its parent does (it watches its
  parent pid, so a parent killed by SIGKILL leaves no orphan) and when its socket closes.

Several scans may run at once (the shim scans in threads): each takes a child of its own
from a small per-process pool for the whole scan, and gives it back when the document is
released. A forked process (RQ's work-horse) starts with an empty pool of its own.

Rendered pages do not go through the socket: the child renders straight into a memfd
that both processes keep mapped (its descriptor passed once more with each reply, by
SCM_RIGHTS), and the parent copies the page out (0.06 ms for an invoice's 1.2 MB page).
A fresh memfd per page would save that copy but cost about 1 ms of page faults on both
sides, measured; a buffer grown past 16 MiB is shrunk after its page. The child is a
fresh interpreter that imports only PDFium and worker.engine.pdf, not the engine: its
address space starts at about 30 MiB.

Protocol, one request at a time on a Unix stream socket: a frame is a 4-byte
little-endian length and that many bytes of JSON; `open` is followed by the document's
bytes. No pickle crosses the boundary. `open` answers with the page count, sizes and kinds
(worker.engine.pdf_pages: born-digital, scanned with its image, or mixed) and, from the same
visit of each page (worker.engine.pdf.visit_pages), every page rendered for the fast pass (for
a JPEG scan, its JPEG data) while they fit in 16 MiB, one after another in the page buffer: a
document of a few pages costs one round trip, not one a page; `render` (a page at a scale),
`region` (a box of a page at a scale), `image` (a scan's page with its image filling the
bitmap) and `jpeg` (a scan's raw DCTDecode data) answer in the page buffer.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import math
import mmap
import multiprocessing.util
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from worker.engine.errors import DeadlineReached, ErrorCode, ScanFailed

if TYPE_CHECKING:
    import numpy as np

    from worker.engine.deadline import Deadline
    from worker.engine.pdf_pages import Affine
    from worker.settings import Settings

_LENGTH = struct.Struct("<I")
# Replies and requests are a few hundred bytes of JSON; anything longer is a broken peer.
_MAX_FRAME = 1 << 20
# Children kept idle per process: one per concurrent scan of the shim's default, and some.
_KEEP_IDLE = 4
# A page buffer larger than this (a page of 16 MP or more) is given back after its page is
# copied; smaller ones are kept, so an invoice's pages reuse the memory already faulted in.
_KEEP_PAGE_BYTES = 16 * 2**20
# How often an idle or busy child checks that its parent still lives.
_PARENT_POLL_S = 0.5
# A child ended by one of these crashed on the document itself: corrupt_image. PDFium ends
# a process whose allocation failed with SIGABRT (measured: a 1 GB font program under the
# limit), the kernel's OOM killer with SIGKILL: those, and any other end, image_too_large.
_CRASH_SIGNALS = frozenset({signal.SIGSEGV})


class _ChildGone(Exception):
    """The child died while it worked for us."""

    def __init__(self, status: int | None) -> None:
        super().__init__(status)
        self.status = status


# --------------------------------------------------------------------------- the parent


def _send_frame(sock: socket.socket, header: dict[str, Any], payload: bytes = b"") -> None:
    body = json.dumps(header, separators=(",", ":")).encode()
    sock.sendall(_LENGTH.pack(len(body)) + body)
    if payload:
        sock.sendall(payload)


def _recv_exact(sock: socket.socket, size: int, fds: list[int] | None = None) -> bytes:
    parts: list[bytes] = []
    got = 0
    while got < size:
        if fds is not None:
            chunk, new_fds, _flags, _addr = socket.recv_fds(sock, size - got, 1)
            fds.extend(new_fds)
        else:
            chunk = sock.recv(size - got)
        if not chunk:
            raise EOFError("the peer closed the socket")
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def _recv_frame(sock: socket.socket, fds: list[int] | None = None) -> dict[str, Any]:
    (size,) = _LENGTH.unpack(_recv_exact(sock, _LENGTH.size, fds))
    if size > _MAX_FRAME:
        raise EOFError(f"a frame of {size} bytes")
    header = json.loads(_recv_exact(sock, size, fds))
    if not isinstance(header, dict):
        raise EOFError("a frame that is not a JSON object")
    return header


class _Child:
    """One renderer process and the parent's end of its socket."""

    def __init__(self, memory_mb: int) -> None:
        self.memory_mb = memory_mb
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        env = {
            **os.environ,
            # PDFium's large buffers (a decoded image, a bitmap) from the heap, kept between
            # documents, instead of fresh mappings faulted in for every page: a digital
            # PDF's scan went from 1.06x to 0.95x the in-process one (docs/reliability.md).
            # _release_heap still gives back what a large document left.
            "MALLOC_MMAP_THRESHOLD_": str(64 * 2**20),
            "MALLOC_TRIM_THRESHOLD_": str(128 * 2**20),
        }
        # The checkout's own package, whatever the working directory of the parent.
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "worker.engine.isolation",
                str(theirs.fileno()),
                str(memory_mb),
                str(os.getpid()),
            ],
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            # PDFium's abort message on a failed allocation is no log line of ours.
            stderr=subprocess.DEVNULL,
            env=env,
        )
        theirs.close()
        self.sock = ours
        self.owner = os.getpid()
        # Never idle yet: if it dies on the first request, the request killed it.
        self.fresh = True
        # The parent's mapping of the child's page buffer (a memfd), kept between renders.
        self.pages: mmap.mmap | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def page(self, fd: int, size: int, width: int, height: int, offset: int = 0) -> np.ndarray:
        """Copy a rendered page out of the child's buffer (`fd`, now `size` bytes long),
        `offset` bytes in."""
        import numpy as np

        if self.pages is None or len(self.pages) != size:
            self.pages = mmap.mmap(fd, size)
        page = np.frombuffer(self.pages, np.uint8, count=width * height, offset=offset)
        copy = page.reshape(height, width).copy()
        del page
        return copy

    def done_with_buffer(self, size: int) -> None:
        if size > _KEEP_PAGE_BYTES and self.pages is not None:
            # The child shrinks its buffer before its next request: let go of it first.
            self.pages.close()
            self.pages = None

    def kill(self) -> None:
        if self.pages is not None:
            self.pages.close()
            self.pages = None
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5)
        self.sock.close()

    def request(
        self,
        header: dict[str, Any],
        payload: bytes = b"",
        deadline: Deadline | None = None,
        fds: list[int] | None = None,
    ) -> dict[str, Any]:
        """Send one request and wait for its reply, at most until `deadline`.

        Raises DeadlineReached (the child killed) when the deadline passes first, and
        _ChildGone when the child died.
        """
        budget = deadline.budget_ms if deadline is not None else None
        if deadline is not None and deadline.expired():
            # Nothing sent: the child stays idle and usable.
            raise DeadlineReached(f"the deadline of {budget or 0:g} ms passed")
        try:
            self.sock.settimeout(_remaining_s(deadline))
            _send_frame(self.sock, header, payload)
            self.sock.settimeout(_remaining_s(deadline))
            return _recv_frame(self.sock, fds)
        except TimeoutError:
            self.kill()
            raise DeadlineReached(
                f"the deadline of {budget or 0:g} ms passed while the PDF renderer worked; it was "
                "stopped"
            ) from None
        except (EOFError, OSError, ValueError):
            # The child is gone (or talks nonsense, which no child of ours does alive).
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            status = self.process.wait()
            self.sock.close()
            raise _ChildGone(status) from None
        except BaseException:
            # Interrupted mid-request (RQ's job timeout raises in this thread): the reply
            # may still come, so this child can serve no one else.
            self.kill()
            raise


def _remaining_s(deadline: Deadline | None) -> float | None:
    if deadline is None or deadline.budget_ms is None:
        return None
    remaining = deadline.remaining_ms() / 1000.0
    # A timeout of 0 would make the socket non-blocking: the deadline has passed anyway.
    return max(remaining, 1e-3)


class _Children:
    """The idle children of this process, taken one per scan and given back after it."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.idle: list[_Child] = []
        self._stops_at_exit = 0  # the process whose exit stops the children

    def take(self, memory_mb: int, *, fresh: bool = False) -> _Child:
        with self.lock:
            while self.idle and not fresh:
                child = self.idle.pop()
                if child.alive() and child.memory_mb == memory_mb:
                    return child
                child.kill()
            if self._stops_at_exit != os.getpid():
                # atexit (below) stops them when a process exits normally; a
                # multiprocessing child, such as a worker of a pool, ends with os._exit
                # after multiprocessing's own finalizers, and left its renderers behind
                # for the pool to adopt.
                self._stops_at_exit = os.getpid()
                multiprocessing.util.Finalize(None, self.stop, exitpriority=10)
        return _Child(memory_mb)

    def give_back(self, child: _Child) -> None:
        with self.lock:
            if child.owner == os.getpid() and child.alive() and len(self.idle) < _KEEP_IDLE:
                child.fresh = False
                self.idle.append(child)
                return
        if child.owner == os.getpid():
            child.kill()

    def forget(self) -> None:
        """In a forked child: the children belong to the parent; leave them alone."""
        self.lock = threading.RLock()
        self.idle = []

    def stop(self) -> None:
        with self.lock:
            idle, self.idle = self.idle, []
        for child in idle:
            if child.owner == os.getpid():
                child.kill()


_CHILDREN = _Children()
os.register_at_fork(after_in_child=_CHILDREN.forget)
atexit.register(_CHILDREN.stop)


def warm_up(settings: Settings) -> None:
    """Start one child and wait until it is ready, so the first PDF does not pay for it."""
    child = _CHILDREN.take(settings.pdf_child_memory_mb)
    try:
        child.request({"op": "ping"})
    except _ChildGone:
        return  # the next document starts another
    _CHILDREN.give_back(child)


@dataclass
class _Failure:
    code: ErrorCode
    message: str


class ChildDocument:
    """A PDF open in a child process for the length of one scan: its page count and
    sizes, and pages rendered on demand. The child goes back to the pool when the
    document is released (the engine drops the document at the end of the scan)."""

    def __init__(
        self,
        child: _Child,
        count: int,
        sizes: list[tuple[float, float]],
        kinds: list[dict[str, Any]],
        deadline: Deadline | None,
        rendered: dict[int, tuple[float, np.ndarray]] | None = None,
        jpegs: dict[int, bytes] | None = None,
    ) -> None:
        self._child = child
        self.count = count
        self.sizes = sizes
        # Each page's kind and, for a scan, its image (worker.engine.pdf_pages.inspect).
        self.kinds = kinds
        self._deadline = deadline
        self._failure: _Failure | None = None
        # Pages as the fast pass asks for them, rendered with the open: one round trip to
        # the child for a document of a few pages instead of one a page.
        self._rendered = rendered or {}
        # Scanned pages' JPEG data, sent with the open for the same reason.
        self._jpegs = jpegs or {}
        self._release = weakref.finalize(self, _close, child)

    def render(self, index: int, scale: float) -> np.ndarray:
        ready = self._rendered.get(index)
        if ready is not None and math.isclose(scale, ready[0]):
            del self._rendered[index]
            return ready[1]
        page, _ = self._buffer({"op": "render", "index": index, "scale": scale})
        return page

    def jpeg(self, index: int) -> bytes:
        """The raw DCTDecode data of scanned page `index`'s image."""
        data = self._jpegs.pop(index, None)
        if data is not None:
            return data
        page, _ = self._buffer({"op": "jpeg", "index": index})
        return page.tobytes()

    def render_image(self, index: int, to_page: Affine, size: tuple[int, int]) -> np.ndarray:
        """Scanned page `index` with its image filling a bitmap of `size`."""
        header = {"op": "image", "index": index, "to_page": list(to_page), "size": list(size)}
        page, _ = self._buffer(header)
        return page

    def render_region(
        self, index: int, scale: float, box: tuple[float, float, float, float]
    ) -> tuple[np.ndarray, int, int]:
        """The part `box` (page points, y down) of page `index` at `scale`, with its left
        and top in pixels of the whole page at that scale."""
        header = {"op": "region", "index": index, "scale": scale, "box": list(box)}
        page, reply = self._buffer(header)
        return page, int(reply["left"]), int(reply["top"])

    def _buffer(self, header: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
        """One request the child answers with pixels (or bytes) in its page buffer."""
        if self._failure is not None:
            raise ScanFailed(self._failure.code, self._failure.message)
        if not self._child.alive():
            # Killed at the deadline by an earlier page: the document is no longer open.
            raise DeadlineReached("the PDF renderer was stopped at the deadline")
        fds: list[int] = []
        try:
            reply = _ask(self._child, header, self._deadline, fds)
            if len(fds) != 1:
                raise RuntimeError("the PDF renderer answered without its page buffer")
            size = int(reply["buffer"])
            page = self._child.page(fds[0], size, int(reply["width"]), int(reply["height"]))
            self._child.done_with_buffer(size)
            return page, reply
        except ScanFailed as failure:
            self._failure = _Failure(failure.code, failure.message)
            raise
        finally:
            for fd in fds:
                os.close(fd)


def _close(child: _Child) -> None:
    if child.alive():
        try:
            child.sock.settimeout(5.0)
            _send_frame(child.sock, {"op": "close"})
        except OSError:
            child.kill()
    _CHILDREN.give_back(child)


def _ask(
    child: _Child,
    header: dict[str, Any],
    deadline: Deadline | None,
    fds: list[int] | None = None,
    payload: bytes = b"",
) -> dict[str, Any]:
    """One request; the child's own refusal, or its death, as ScanFailed."""
    try:
        reply = child.request(header, payload, deadline, fds)
    except _ChildGone as gone:
        raise _death(gone.status, child.memory_mb) from None
    if "crash" in reply:
        raise RuntimeError(f"the PDF renderer failed: {reply['crash']}")
    if "code" in reply:
        raise ScanFailed(ErrorCode(reply["code"]), str(reply.get("message", "")))
    return reply


def _death(status: int | None, memory_mb: int) -> ScanFailed:
    if status is not None and status < 0 and -status in _CRASH_SIGNALS:
        return ScanFailed(
            ErrorCode.CORRUPT_IMAGE,
            f"PDFium crashed on this document ({signal.Signals(-status).name}); the worker "
            "is unharmed",
        )
    how = (
        f"with {signal.Signals(-status).name}"
        if status is not None and status < 0
        else (f"with status {status}")
    )
    return ScanFailed(
        ErrorCode.IMAGE_TOO_LARGE,
        f"rendering the PDF needed more memory than the renderer may take "
        f"({memory_mb} MiB of address space, QRW_PDF_CHILD_MEMORY_MB): it stopped {how}",
    )


def open_in_child(data: bytes, settings: Settings, deadline: Deadline | None) -> ChildDocument:
    """Check and open `data` in a child; raises ScanFailed (the child's refusal, or its
    death) or DeadlineReached (the child killed at the deadline)."""
    header = {
        "op": "open",
        "size": len(data),
        "max_pages": settings.max_pages,
        # What the child needs to render the first page as the fast pass will ask for it.
        "dpi": settings.pdf_dpi,
        "max_pixels": settings.max_pixels,
        "max_document_pixels": settings.max_document_pixels,
        "fast_side": settings.fast_max_side,
    }
    child = _CHILDREN.take(settings.pdf_child_memory_mb)
    fds: list[int] = []
    try:
        try:
            reply = _ask(child, header, deadline, fds, payload=data)
        except ScanFailed:
            if child.alive() or child.fresh:
                raise
            # An idle child that died before this document reached it (killed from
            # outside, say): the document gets a fresh one, and the verdict of that one.
            _CHILDREN.give_back(child)
            child = _CHILDREN.take(settings.pdf_child_memory_mb, fresh=True)
            reply = _ask(child, header, deadline, fds, payload=data)
        rendered: dict[int, tuple[float, np.ndarray]] = {}
        jpegs: dict[int, bytes] = {}
        if len(fds) == 1:
            size = int(reply["buffer"])
            for item in reply.get("prefetched", []):
                index, offset = int(item["index"]), int(item["offset"])
                if item.get("jpeg"):
                    data = child.page(fds[0], size, int(item["size"]), 1, offset)
                    jpegs[index] = data.tobytes()
                else:
                    page = child.page(fds[0], size, int(item["width"]), int(item["height"]), offset)
                    rendered[index] = (float(item["scale"]), page)
            child.done_with_buffer(size)
    except BaseException:
        _CHILDREN.give_back(child)
        raise
    finally:
        for fd in fds:
            os.close(fd)
    sizes = [(float(w), float(h)) for w, h in reply["sizes"]]
    kinds = [dict(kind) for kind in reply.get("kinds", [])]
    return ChildDocument(child, int(reply["count"]), sizes, kinds, deadline, rendered, jpegs)


# --------------------------------------------------------------------------- the child


def _watch_parent(parent: int) -> None:
    # A parent killed by SIGKILL cannot tell us: its pid changing is how we learn it.
    while os.getppid() == parent:
        time.sleep(_PARENT_POLL_S)
    os._exit(0)


# A child holding more than this after a document hands its free heap back to the OS; below
# it, keeping the heap spares the next document the page faults of growing it again.
_TRIM_ABOVE_BYTES = 96 * 2**20


@functools.cache
def _malloc_trim() -> Any:
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")  # runs ldconfig: once per child, not per document
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc: nothing to trim
        return None


def _release_heap() -> None:
    trim = _malloc_trim()
    with open("/proc/self/statm", "rb") as statm:
        resident = int(statm.read().split()[1]) * mmap.PAGESIZE
    if trim is not None and resident > _TRIM_ABOVE_BYTES:
        trim(0)


class _PageBuffer:
    """The child's end of the page buffer: one memfd, grown to the largest page asked for
    and shrunk back after a page past _KEEP_PAGE_BYTES (once the parent has copied it)."""

    def __init__(self) -> None:
        self.fd = os.memfd_create("qrw-pdf-page", os.MFD_CLOEXEC)
        self.size = 0
        self.mapping: mmap.mmap | None = None

    def allocate(self, width: int, height: int) -> mmap.mmap:
        needed = width * height
        if self.mapping is None or needed > self.size:
            self.mapping = None
            os.ftruncate(self.fd, needed)
            self.size = needed
            self.mapping = mmap.mmap(self.fd, needed)
        return self.mapping

    def allocate_at(self, offset: int, size: int) -> memoryview:
        """`size` bytes of the buffer from `offset`, grown to hold them (what it held before
        `offset` is kept: the memfd keeps its contents when it grows)."""
        if self.mapping is None or offset + size > self.size:
            grown = max(offset + size, self.size)
            self.mapping = None
            os.ftruncate(self.fd, grown)
            self.size = grown
            self.mapping = mmap.mmap(self.fd, grown)
        return memoryview(self.mapping)[offset : offset + size]

    def shrink(self) -> None:
        if self.size > _KEEP_PAGE_BYTES:
            self.mapping = None
            os.ftruncate(self.fd, 0)
            self.size = 0


def _serve(sock: socket.socket) -> None:
    from worker.engine import pdf as pdf_module
    from worker.engine import pdf_pages

    document: Any = None
    data: bytes | None = None
    pages = _PageBuffer()
    while True:
        try:
            header = _recv_frame(sock)
        except (EOFError, OSError, ValueError):
            return
        pages.shrink()
        op = header.get("op")
        if op == "close":
            document = data = None
            _release_heap()
            continue
        reply: dict[str, Any]
        fds: list[int] = []
        try:
            if op == "ping":
                reply = {}
            elif op == "open":
                document = data = None
                data = _recv_exact(sock, int(header["size"]))
                pdf_module.check_streams(data)
                document = pdf_module.open_pdf(data)
                count, sizes = pdf_module.page_sizes(document, int(header["max_pages"]))
                # Every page as the engine will first ask for it, in the same visit as its
                # kind: a scan's JPEG data, or the page rendered for the fast pass.
                grids = pdf_module.page_grids(
                    sizes,
                    int(header["dpi"]),
                    int(header["max_pixels"]),
                    int(header["max_document_pixels"]),
                )
                scales = [pdf_module.reduced_scale(g, int(header["fast_side"])) for g in grids]
                kinds, prefetched = pdf_module.visit_pages(
                    document, sizes, scales, _KEEP_PAGE_BYTES, pages.allocate_at
                )
                reply = {"count": count, "sizes": sizes, "kinds": kinds}
                if prefetched:
                    reply["prefetched"] = prefetched
                    reply["buffer"] = pages.size
                    fds.append(pages.fd)
            elif op == "render" and document is not None:
                width, height = pdf_module.render_page(
                    document, int(header["index"]), float(header["scale"]), pages.allocate
                )
                reply = {"width": width, "height": height, "buffer": pages.size}
                fds.append(pages.fd)
            elif op == "jpeg" and document is not None:
                size = pdf_pages.jpeg_data(document, int(header["index"]), pages.allocate)
                reply = {"width": size, "height": 1, "buffer": pages.size}
                fds.append(pages.fd)
            elif op == "image" and document is not None:
                to_page = tuple(float(v) for v in header["to_page"])
                width, height = (int(v) for v in header["size"])
                width, height = pdf_pages.render_image(
                    document, int(header["index"]), to_page, (width, height), pages.allocate
                )
                reply = {"width": width, "height": height, "buffer": pages.size}
                fds.append(pages.fd)
            elif op == "region" and document is not None:
                box = tuple(float(v) for v in header["box"])
                left, top, width, height = pdf_pages.render_region(
                    document, int(header["index"]), float(header["scale"]), box, pages.allocate
                )
                reply = {
                    "left": left,
                    "top": top,
                    "width": width,
                    "height": height,
                    "buffer": pages.size,
                }
                fds.append(pages.fd)
            else:
                reply = {"crash": f"unknown request {op!r}"}
        except ScanFailed as failure:
            reply = {"code": failure.code.value, "message": failure.message}
        except MemoryError:
            # The address-space limit, met in Python rather than in PDFium: say so, then
            # end, since nothing about this process's heap can be trusted now.
            body = {
                "code": ErrorCode.IMAGE_TOO_LARGE.value,
                "message": "rendering the PDF needed more memory than the renderer may take "
                "(QRW_PDF_CHILD_MEMORY_MB)",
            }
            with contextlib.suppress(OSError):
                _send_frame(sock, body)
            os._exit(3)
        except Exception as exc:  # a bug of ours, not the document's: the parent says so
            reply = {"crash": f"{type(exc).__name__}: {exc}"}
        try:
            body = json.dumps(reply, separators=(",", ":")).encode()
            frame = _LENGTH.pack(len(body)) + body
            if fds:
                socket.send_fds(sock, [frame], fds)
            else:
                sock.sendall(frame)
        except OSError:
            return


def main(argv: list[str]) -> int:
    import resource

    fd, memory_mb, parent = int(argv[0]), int(argv[1]), int(argv[2])
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    sock = socket.socket(fileno=fd)
    # Loaded before the limit: what they take is the same for every document.
    import pypdfium2  # noqa: F401

    import worker.engine.pdf
    import worker.engine.pdf_pages  # noqa: F401

    _malloc_trim()

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    limit = memory_mb * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    _serve(sock)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
