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

Rendered pages come back without a copy through the socket: the child renders straight
into a memfd, passes the descriptor (SCM_RIGHTS) and forgets it; the parent maps it, and
the page's array is that mapping. The child is a fresh interpreter that imports only
PDFium and worker.engine.pdf, not the engine: its address space starts at about 30 MiB.

Protocol, one request at a time on a Unix stream socket: a frame is a 4-byte
little-endian length and that many bytes of JSON; `open` is followed by the document's
bytes. No pickle crosses the boundary.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import mmap
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
    from worker.settings import Settings

_LENGTH = struct.Struct("<I")
# Replies and requests are a few hundred bytes of JSON; anything longer is a broken peer.
_MAX_FRAME = 1 << 20
# Children kept idle per process: one per concurrent scan of the shim's default, and some.
_KEEP_IDLE = 4
# How often an idle or busy child checks that its parent still lives.
_PARENT_POLL_S = 0.5
# Signals with which PDFium (and the C library under it) ends a process whose allocation
# failed; anything else that kills the child is a crash on the document itself.
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
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
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

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
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

    def take(self, memory_mb: int, *, fresh: bool = False) -> _Child:
        with self.lock:
            while self.idle and not fresh:
                child = self.idle.pop()
                if child.alive() and child.memory_mb == memory_mb:
                    return child
                child.kill()
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
        self, child: _Child, count: int, sizes: list[tuple[float, float]], deadline: Deadline | None
    ) -> None:
        self._child = child
        self.count = count
        self.sizes = sizes
        self._deadline = deadline
        self._failure: _Failure | None = None
        self._release = weakref.finalize(self, _close, child)

    def render(self, index: int, scale: float) -> np.ndarray:
        import numpy as np

        if self._failure is not None:
            raise ScanFailed(self._failure.code, self._failure.message)
        if not self._child.alive():
            # Killed at the deadline by an earlier page: the document is no longer open.
            raise DeadlineReached("the PDF renderer was stopped at the deadline")
        fds: list[int] = []
        try:
            reply = _ask(
                self._child, {"op": "render", "index": index, "scale": scale}, self._deadline, fds
            )
            width, height = int(reply["width"]), int(reply["height"])
            if len(fds) != 1:
                raise ScanFailed(ErrorCode.CORRUPT_IMAGE, f"PDF page {index + 1} was not rendered")
            mapping = mmap.mmap(fds[0], width * height)
        except ScanFailed as failure:
            self._failure = _Failure(failure.code, failure.message)
            raise
        finally:
            for fd in fds:
                os.close(fd)
        return np.frombuffer(mapping, np.uint8).reshape(height, width)


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
    header = {"op": "open", "size": len(data), "max_pages": settings.max_pages}
    child = _CHILDREN.take(settings.pdf_child_memory_mb)
    try:
        try:
            reply = _ask(child, header, deadline, payload=data)
        except ScanFailed:
            if child.alive() or child.fresh:
                raise
            # An idle child that died before this document reached it (killed from
            # outside, say): the document gets a fresh one, and the verdict of that one.
            _CHILDREN.give_back(child)
            child = _CHILDREN.take(settings.pdf_child_memory_mb, fresh=True)
            reply = _ask(child, header, deadline, payload=data)
    except BaseException:
        _CHILDREN.give_back(child)
        raise
    sizes = [(float(w), float(h)) for w, h in reply["sizes"]]
    return ChildDocument(child, int(reply["count"]), sizes, deadline)


# --------------------------------------------------------------------------- the child


def _watch_parent(parent: int) -> None:
    # A parent killed by SIGKILL cannot tell us: its pid changing is how we learn it.
    while os.getppid() == parent:
        time.sleep(_PARENT_POLL_S)
    os._exit(0)


def _release_heap() -> None:
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(name).malloc_trim(0)


def _serve(sock: socket.socket) -> None:
    from worker.engine import pdf as pdf_module

    document: Any = None
    data: bytes | None = None
    while True:
        try:
            header = _recv_frame(sock)
        except (EOFError, OSError, ValueError):
            return
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
                reply = {"count": count, "sizes": sizes}
            elif op == "render" and document is not None:
                fd = os.memfd_create("qrw-pdf-page", os.MFD_CLOEXEC)
                fds.append(fd)

                def allocate(width: int, height: int, fd: int = fd) -> mmap.mmap:
                    os.ftruncate(fd, width * height)
                    return mmap.mmap(fd, width * height)

                width, height = pdf_module.render_page(
                    document, int(header["index"]), float(header["scale"]), allocate
                )
                reply = {"width": width, "height": height}
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
        finally:
            for fd in fds:
                os.close(fd)


def main(argv: list[str]) -> int:
    import resource

    fd, memory_mb, parent = int(argv[0]), int(argv[1]), int(argv[2])
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    sock = socket.socket(fileno=fd)
    # Loaded before the limit: what they take is the same for every document.
    import pypdfium2  # noqa: F401

    import worker.engine.pdf  # noqa: F401

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    limit = memory_mb * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    _serve(sock)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
