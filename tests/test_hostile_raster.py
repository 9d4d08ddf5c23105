"""Raster files that escaped the limits in the second hostile round (issue 17, points 1, 2
and 5b), rebuilt exactly by worker/bench/hostile_files.py.

- A GIF's logical screen says nothing about its frames: Pillow grows the canvas to every
  frame it decodes, so each frame's own size and offset is checked from its descriptor
  (APNG fcTL and WebP ANMF headers alike) before any pixel is decoded.
- A progressive JPEG's scans are decoded one after another in one C call that no deadline
  interrupts: its SOS markers are counted first and past QRW_MAX_JPEG_SCANS it is refused;
  within that, the pixels its scans cover are counted too (QRW_MAX_JPEG_SCAN_PIXELS), a
  decode predicted to outlast the time left is not started, and the coefficients libjpeg
  gathers first are charged to the page's memory.
- Ancillary PNG chunks (text, ICC profiles, private data) say nothing about the pixels:
  a large or inflating one must not make a valid PNG "corrupt".

Memory is measured in a fresh process with its address space capped, so that a regression
fails here instead of taking the machine; the worker and the shim are real processes.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from models.synth import digital_invoice
from tests.conftest import reply_list, wait_result
from tests.services import RedisServer, ShimProcess, WorkerProcess
from worker.bench import hostile_files as hf
from worker.engine import Engine, ErrorCode
from worker.engine.images import jpeg_shape
from worker.queue import producer
from worker.settings import Settings

REPO = Path(__file__).resolve().parents[1]
CODE = "https://invoices.example.com/2026/INV-001717?total=880.00"
# A 16x16 screen whose second frame declares 20000x20000 (issue 17, point 1).
RED_TEAM_GIF = {"frame_side": 20_000, "screen": 16}
# Thousands of repeated scans over a modest page: each decode of it takes seconds here.
SCAN_BOMB = {"side": 2000, "repeats": 3000}
# 100 scans (libjpeg's 6 for gray and 94 repeats), at QRW_MAX_JPEG_SCANS, over 49 MP:
# 295 KB, and about 4 s per decode here, reduced or not.
SLOW_SCANS = {"side": 7000, "repeats": 94}


@pytest.fixture(scope="module")
def classical() -> Engine:
    return Engine(Settings(backend="none"))


@pytest.fixture(scope="module")
def symbol() -> np.ndarray:
    return hf.qr_modules(CODE)


# --- in a fresh process, address space capped ------------------------------------------------

PROBE = r"""
import json, resource, sys, time
cap = int(sys.argv[3]) * 2**20
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
from worker.engine import Engine
from worker.settings import Settings

def mib(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)

engine = Engine(Settings(backend="none"))
data = open(sys.argv[1], "rb").read()
baseline = mib("VmRSS")
with open("/proc/self/clear_refs", "w") as refs:
    refs.write("5")
started = time.perf_counter()
try:
    result = engine.scan(data, deadline_ms=int(sys.argv[2])).to_dict()
except MemoryError:
    result = {"error": {"code": "MemoryError", "message": "the address space cap was hit"}}
print(json.dumps({
    "seconds": time.perf_counter() - started,
    "peak_above_mib": mib("VmHWM") - baseline,
    "result": result,
}))
"""


def probe(
    tmp_path: Path, data: bytes, *, deadline_ms: int = 10_000, cap_mib: int = 3072
) -> dict[str, Any]:
    """Scan `data` in a fresh process limited to `cap_mib` of address space."""
    path = tmp_path / "input.bin"
    path.write_bytes(data)
    env = {k: v for k, v in os.environ.items() if not k.startswith("QRW_")}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(path), str(deadline_ms), str(cap_mib)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=env,
        cwd=REPO,
    )
    assert out.stdout.strip(), out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def error(report: dict[str, Any]) -> tuple[str, str]:
    failure = report["result"]["error"]
    assert failure, report
    return failure["code"], failure["message"]


# --- point 1: frames larger than their canvas ------------------------------------------------


def test_a_gif_whose_second_frame_outgrows_its_16x16_screen_is_refused_from_its_header(
    tmp_path: Path,
) -> None:
    # The red-team file: `qrw scan` passed 4 GiB in 12 s; as a job the worker was killed
    # three times. The frame's own descriptor names 20000x20000 = 400 MP.
    report = probe(tmp_path, hf.gif_large_frame(**RED_TEAM_GIF))
    code, message = error(report)
    assert code == ErrorCode.IMAGE_TOO_LARGE, message
    assert "frame 2" in message and "20000x20000" in message and "QRW_MAX_PIXELS" in message
    assert report["seconds"] < 2.0, report
    assert report["peak_above_mib"] < 64, report


def test_a_7000x7000_gif_frame_on_a_16x16_screen_is_charged_as_a_7000x7000_animation(
    tmp_path: Path,
) -> None:
    # 49 MP fits QRW_MAX_PIXELS, but an animated GIF frame costs about 19 bytes per
    # pixel while Pillow composes it: 715 MiB measured before the fix.
    report = probe(tmp_path, hf.gif_large_frame(7000, 16))
    code, message = error(report)
    assert code == ErrorCode.IMAGE_TOO_LARGE, message
    assert "frame 2" in message and "bytes per pixel" in message
    assert report["peak_above_mib"] < 64, report


def test_a_one_frame_gif_larger_than_its_screen_is_measured_by_its_frame(
    classical: Engine,
) -> None:
    screen = b"GIF89a" + struct.pack("<HHBBB", 16, 16, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, 20_000, 20_000, 0)
    result = classical.scan(screen + frame + hf.gif_blank_lzw(20_000 * 20_000) + b";")
    assert result.error is not None and result.error.code == ErrorCode.IMAGE_TOO_LARGE
    assert "20000x20000" in result.error.message
    assert result.timings_ms["decode_image"] < 1000


def gif_code_beyond_screen(symbol: np.ndarray, screen: int = 16, offset: int = 8) -> bytes:
    """A two-frame GIF: a blank screen x screen frame, then a frame showing `symbol` at
    (offset, offset), larger than the screen, as some encoders write animations."""
    module = 4
    dark = np.kron(symbol, np.ones((module, module), bool))
    picture = Image.fromarray(np.where(dark, np.uint8(0), np.uint8(255))).convert("P")
    buffer = io.BytesIO()
    picture.save(buffer, format="GIF")
    single = buffer.getvalue()
    flags = single[10]
    table = 3 << ((flags & 7) + 1) if flags & 0x80 else 0
    palette = single[13 : 13 + table]
    frame = single[single.index(b"\x2c", 13 + table) : -1]  # descriptor to trailer
    # Move the frame to (offset, offset) and give it the global palette as its own.
    descriptor = bytearray(frame[:10])
    struct.pack_into("<HH", descriptor, 1, offset, offset)
    descriptor[9] = 0x80 | (flags & 7) if table else 0
    first = b"\x2c" + struct.pack("<HHHHB", 0, 0, screen, screen, 0)
    first += hf.gif_blank_lzw(screen * screen)
    header = b"GIF89a" + struct.pack("<HHBBB", screen, screen, 0x80, 0, 0)
    return (
        header
        + b"\x00\x00\x00\xff\xff\xff"
        + first
        + bytes(descriptor)
        + palette
        + frame[10:]
        + b";"
    )


def test_a_gif_frame_drawn_beyond_a_small_screen_is_read_on_the_grown_canvas(
    classical: Engine, symbol: np.ndarray
) -> None:
    # Not hostile: the canvas grows to cover the frame, as Pillow draws it, and the page
    # is that size, so the code's corners lie inside it.
    result = classical.scan(gif_code_beyond_screen(symbol))
    assert result.error is None, result.error
    assert [(c.text, c.page) for c in result.codes] == [(CODE, 1)]
    side = 8 + symbol.shape[0] * 4
    for x, y in result.codes[0].quad:
        assert 8 <= x <= 8 + side and 8 <= y <= 8 + side


@pytest.mark.parametrize(
    ("make", "name"),
    [(hf.apng_large_frame, "PNG 16x16"), (hf.webp_large_frame, "WEBP 32x32")],
    ids=["apng", "webp"],
)
def test_an_apng_or_webp_frame_outside_its_canvas_is_refused_at_once_naming_the_frame(
    classical: Engine, make: Callable[[], bytes], name: str
) -> None:
    # Both formats require every frame inside the canvas, and their decoders refuse one
    # outside it: said from the frame headers, before any frame is decoded.
    result = classical.scan(make())
    assert result.error is not None and result.error.code == ErrorCode.CORRUPT_IMAGE
    message = result.error.message
    kind, canvas = name.split()
    assert f"frame 2 of the {kind}" in message and "20000x20000" in message, message
    assert f"{canvas} canvas" in message, message
    assert result.timings_ms["decode_image"] < 100


# --- point 2: progressive JPEGs with a huge number of scans -----------------------------------


def test_a_progressive_jpeg_with_thousands_of_repeated_scans_is_refused_before_decoding(
    classical: Engine,
) -> None:
    # The red-team file repeats the last scan of a 7745x7745 progressive JPEG 580,306
    # times; this one 3,000 times over 2000x2000 (66 KB). Before the fix a 1 s deadline
    # took 12 s here: every decode of the page runs all the scans in one C call.
    data = hf.progressive_jpeg_scans(**SCAN_BOMB)
    started = time.perf_counter()
    result = classical.scan(data, deadline_ms=1000)
    elapsed = time.perf_counter() - started
    assert result.error is not None and result.error.code == ErrorCode.IMAGE_TOO_LARGE
    message = result.error.message
    assert "more than 100 scans" in message and "QRW_MAX_JPEG_SCANS" in message, message
    assert elapsed < 1.0, elapsed


def test_the_red_team_jpeg_of_580306_scans_costs_a_walk_of_101_scans(classical: Engine) -> None:
    data = hf.progressive_jpeg_scans(hf.MAX_SIDE, 580_306)
    assert 50_000_000 < len(data) < Settings().max_bytes
    started = time.perf_counter()
    result = classical.scan(data, deadline_ms=10_000)
    assert result.error is not None and result.error.code == ErrorCode.IMAGE_TOO_LARGE
    assert time.perf_counter() - started < 1.0


def progressive(symbol: np.ndarray, *, extra_scans: int = 0, sequential: bool = False) -> bytes:
    """A colour progressive JPEG showing `symbol` (libjpeg's script: 10 scans), or a
    sequential one (one scan), with its last scan repeated `extra_scans` more times."""
    dark = np.kron(symbol, np.ones((6, 6), bool))
    gray = np.where(dark, np.uint8(0), np.uint8(255))
    buffer = io.BytesIO()
    picture = Image.fromarray(gray).convert("RGB")
    picture.save(buffer, format="JPEG", progressive=not sequential)
    data = buffer.getvalue()
    last = data.rindex(b"\xff\xda")
    return data[:-2] + data[last:-2] * extra_scans + b"\xff\xd9"


def test_a_progressive_jpeg_at_the_scan_limit_is_read_and_one_scan_more_is_refused(
    symbol: np.ndarray,
) -> None:
    strict = Engine(Settings(backend="none", max_jpeg_scans=12))
    at_limit = strict.scan(progressive(symbol, extra_scans=2))
    assert [c.text for c in at_limit.codes] == [CODE], at_limit.error
    over = strict.scan(progressive(symbol, extra_scans=3))
    assert over.error is not None and over.error.code == ErrorCode.IMAGE_TOO_LARGE
    assert "more than 12 scans" in over.error.message


def test_a_sequential_jpeg_is_one_scan_whatever_follows_it(
    classical: Engine, symbol: np.ndarray
) -> None:
    # One sequential scan holding every component is the whole image: libjpeg decodes
    # no scan after it, so repeating it costs nothing and is not refused.
    data = progressive(symbol, extra_scans=200, sequential=True)
    assert jpeg_shape(data).scans == 1
    started = time.perf_counter()
    result = classical.scan(data)
    assert [c.text for c in result.codes] == [CODE], result.error
    assert time.perf_counter() - started < 2.0


def test_the_jpeg_walk_counts_scans_through_stuffed_bytes_and_restart_markers(
    symbol: np.ndarray,
) -> None:
    # Noise makes many 0xFF bytes in the entropy-coded data (stuffed as FF 00); restart
    # markers (FF D0..D7) sit between its intervals: neither ends a scan.
    noise = np.random.default_rng(17).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    for is_progressive, scans in ((True, 10), (False, 1)):
        buffer = io.BytesIO()
        Image.fromarray(noise).save(
            buffer,
            format="JPEG",
            quality=100,
            progressive=is_progressive,
            restart_marker_blocks=4,
        )
        data = buffer.getvalue()
        assert data.count(b"\xff\x00") > 1000 and data.count(b"\xff\xd3") > 10
        shape = jpeg_shape(data)
        assert (shape.width, shape.height, shape.components) == (640, 480, 3)
        assert (shape.progressive, shape.scans) == (is_progressive, scans)
    assert jpeg_shape(progressive(symbol, extra_scans=5)).scans == 15
    # Counting stops once past a limit, so the red-team file costs a short walk.
    assert jpeg_shape(hf.progressive_jpeg_scans(64, 10_000), max_scans=100).scans == 101


def test_a_progressive_jpeg_within_the_scan_limit_but_slow_to_decode_ends_within_the_deadline(
    classical: Engine,
) -> None:
    # 100 scans pass QRW_MAX_JPEG_SCANS, yet each decode of this page runs them all over
    # 49 MP in one C call: before the fix a 1 s deadline ended after 4.0 s here
    # (deadline_exceeded once the fast pass's reduced decode returned).
    data = hf.progressive_jpeg_scans(**SLOW_SCANS)
    assert jpeg_shape(data).scans == Settings().max_jpeg_scans
    started = time.perf_counter()
    result = classical.scan(data, deadline_ms=1000)
    elapsed = time.perf_counter() - started
    assert result.error is not None and result.error.code == ErrorCode.IMAGE_TOO_LARGE
    assert "QRW_MAX_JPEG_SCAN_PIXELS" in result.error.message, result.error.message
    assert elapsed < 1.0 + 1.0, elapsed


def test_a_decode_that_cannot_end_in_the_time_left_is_not_started(classical: Engine) -> None:
    # With a budget ten times the default, the 49 MP page of 100 scans passes every limit;
    # its decode is predicted from its scans (about 4.9 s) and not started with 1 s left.
    # Without the prediction the scan ended after 4.0 s.
    lenient = Engine(Settings(backend="none", max_jpeg_scan_pixels=10_000_000_000))
    started = time.perf_counter()
    result = lenient.scan(hf.progressive_jpeg_scans(**SLOW_SCANS), deadline_ms=1000)
    elapsed = time.perf_counter() - started
    assert result.error is not None and result.error.code == ErrorCode.DEADLINE_EXCEEDED
    # The result says why: the decode was refused for the time it would take.
    assert "decoding the page would take about" in result.error.message, result.error.message
    assert result.stages_run == ["fast"]
    assert elapsed < 1.0, elapsed


@pytest.fixture(scope="module")
def normal_60mp_jpeg(symbol: np.ndarray) -> bytes:
    # A colour progressive JPEG as cameras write it (4:2:0, libjpeg's 10 scans: 480 M
    # pixels counted, 4.1 bytes per pixel held), at QRW_MAX_PIXELS.
    return hf.progressive_jpeg_page(symbol, hf.MAX_SIDE, subsampling=2)


def test_a_normal_60_mp_progressive_jpeg_is_read(
    classical: Engine, normal_60mp_jpeg: bytes
) -> None:
    shape = jpeg_shape(normal_60mp_jpeg)
    assert (shape.scans, shape.width * shape.height) == (10, hf.MAX_SIDE**2)
    assert shape.scan_pixels < Settings().max_jpeg_scan_pixels
    result = classical.scan(normal_60mp_jpeg)
    assert [c.text for c in result.codes] == [CODE], result.error


def test_a_60_mp_progressive_jpeg_of_full_colour_planes_is_refused_for_its_coefficients(
    classical: Engine, symbol: np.ndarray
) -> None:
    # 4:4:4 keeps three full planes of coefficients: 7.1 bytes per pixel, 406 MiB at
    # 60 MP, past what a page may take; such a page is read up to 46 MP.
    result = classical.scan(hf.progressive_jpeg_page(symbol, hf.MAX_SIDE, subsampling=0))
    assert result.error is not None and result.error.code == ErrorCode.IMAGE_TOO_LARGE
    assert "7.1 bytes per pixel" in result.error.message, result.error.message
    smaller = classical.scan(hf.progressive_jpeg_page(symbol, 6700, subsampling=0))
    assert [c.text for c in smaller.codes] == [CODE], smaller.error


def test_a_normal_60_mp_progressive_jpeg_is_not_decoded_with_too_little_time_left(
    classical: Engine, normal_60mp_jpeg: bytes
) -> None:
    # Its decode is predicted at about 490 ms (it took 290 to 490 here): with a 300 ms
    # deadline it is not started, rather than end past the deadline. Before the
    # prediction the page was decoded and read past the deadline.
    started = time.perf_counter()
    result = classical.scan(normal_60mp_jpeg, deadline_ms=300)
    elapsed = time.perf_counter() - started
    assert result.error is not None and result.error.code == ErrorCode.DEADLINE_EXCEEDED
    assert elapsed < 0.3, elapsed


def test_scan_pixels_count_each_scan_over_the_components_it_holds(symbol: np.ndarray) -> None:
    # libjpeg's scripts at 1000x1000: gray, 6 scans of the page; colour 4:4:4, two DC
    # scans of all three planes and eight AC scans of one; 4:2:0, chroma planes a quarter.
    for options, scan_pixels in (
        ({"mode": "L"}, 6_000_000),
        ({"subsampling": 0}, 14_000_000),
        ({"subsampling": 2}, 8_000_000),
    ):
        shape = jpeg_shape(hf.progressive_jpeg_page(symbol, 1000, **options))
        assert shape.scan_pixels == scan_pixels, options
    repeated = jpeg_shape(hf.progressive_jpeg_scans(1000, 10))
    assert (repeated.scans, repeated.scan_pixels) == (16, 16_000_000)


def test_a_jpeg_whose_scans_cover_the_limit_is_read_and_one_pixel_more_is_refused(
    symbol: np.ndarray,
) -> None:
    # A gray 2000x2000 page of 26 scans: 104 M pixels counted.
    data = hf.progressive_jpeg_page(symbol, 2000, mode="L", extra_scans=20, module=12)
    scan_pixels = jpeg_shape(data).scan_pixels
    assert scan_pixels == 26 * 2000 * 2000
    at_limit = Engine(Settings(backend="none", max_jpeg_scan_pixels=scan_pixels))
    assert [c.text for c in at_limit.scan(data).codes] == [CODE]
    under = Engine(Settings(backend="none", max_jpeg_scan_pixels=scan_pixels - 1))
    over = under.scan(data)
    assert over.error is not None and over.error.code == ErrorCode.IMAGE_TOO_LARGE
    assert f"cover {scan_pixels} pixels" in over.error.message
    assert f"the limit is {scan_pixels - 1} (QRW_MAX_JPEG_SCAN_PIXELS)" in over.error.message


def test_a_progressive_cmyk_jpeg_is_charged_for_the_coefficients_libjpeg_holds(
    tmp_path: Path,
) -> None:
    # A JPEG of several scans is decoded into a buffer of every coefficient of every
    # component (2 bytes a plane pixel) before any row comes out: this 40 MP CMYK page
    # (18 scans, within QRW_MAX_JPEG_SCAN_PIXELS) was read at 322 MiB above the engine,
    # more than the 5.5 bytes per pixel of QRW_MAX_PIXELS (315 MiB) a page may take, and
    # the shim runs two scans at once. It is charged 1.1 + 4 x 2 bytes a pixel, and
    # refused from its header.
    data = hf.progressive_jpeg_page(None, 6325, mode="CMYK")
    shape = jpeg_shape(data)
    assert (shape.components, shape.scans) == (4, 18)
    assert shape.scan_pixels <= Settings().max_jpeg_scan_pixels
    report = probe(tmp_path, data)
    code, message = error(report)
    assert code == "image_too_large", report
    assert "9.1 bytes per pixel" in message, message
    assert report["peak_above_mib"] < 100, report


# --- point 5b: valid PNGs with large ancillary chunks ------------------------------------------


@pytest.mark.parametrize("kind", ["prVt", "tEXt", "zTXt", "iTXt", "iCCP"])
@pytest.mark.parametrize(
    ("rgba", "after_pixels"),
    [(False, False), (True, False), (True, True)],
    ids=["gray-chunk-first", "rgba-chunk-first", "rgba-chunk-last"],
)
def test_a_valid_png_with_a_large_or_inflating_ancillary_chunk_is_read(
    classical: Engine, symbol: np.ndarray, kind: str, rgba: bool, after_pixels: bool
) -> None:
    # Before the fix: a gray PNG with a 20 MB private chunk failed in OpenCV (libpng's
    # chunk size limit), and text or ICC chunks inflating past Pillow's MAX_TEXT_CHUNK
    # failed Pillow's header read or its decode: corrupt_image, all of them.
    data = hf.png_ancillary(symbol, kind, rgba=rgba, after_pixels=after_pixels)
    result = classical.scan(data)
    assert result.error is None, result.error
    assert [c.text for c in result.codes] == [CODE]


@pytest.mark.parametrize(
    "make",
    [
        lambda: hf.png_empty_chunks(50, b"prVt", hf.qr_modules(CODE)),
        lambda: hf.png_empty_chunks(50, b"IDAT", hf.qr_modules(CODE)),
        lambda: hf.webp_junk_chunks(50),
    ],
    ids=["png-private", "png-empty-idat", "webp-junk"],
)
def test_a_header_walk_over_millions_of_empty_chunks_ends_at_the_deadline(
    classical: Engine, make: Callable[[], bytes]
) -> None:
    # 50 MB of 8- or 12-byte chunks. Pillow walked the PNG's private ones for 20 s with a
    # 1 s deadline; our own chunk walks check the deadline as they go. The promise is
    # the deadline + 1 s; the bound leaves a loaded machine some room.
    data = make()
    started = time.perf_counter()
    result = classical.scan(data, deadline_ms=1000)
    elapsed = time.perf_counter() - started
    assert result.error is None or result.error.code == ErrorCode.DEADLINE_EXCEEDED, result.error
    assert elapsed < 3.0, elapsed


def test_pillows_text_limits_stay_as_they_are() -> None:
    # The chunks are skipped, not read with a larger limit: a text bomb inflates nowhere.
    from PIL import PngImagePlugin

    import worker.engine.images  # noqa: F401  (imported for its module-level settings)

    assert PngImagePlugin.MAX_TEXT_CHUNK == 1024 * 1024
    assert PngImagePlugin.MAX_TEXT_MEMORY == 64 * 1024 * 1024


# --- through a real worker and the shim ---------------------------------------------------------


def hostile_inputs() -> dict[str, bytes]:
    return {
        "frame.gif": hf.gif_large_frame(**RED_TEAM_GIF),
        "scans.jpg": hf.progressive_jpeg_scans(**SCAN_BOMB),
        "slow-scans.jpg": hf.progressive_jpeg_scans(**SLOW_SCANS),
    }


@pytest.fixture(scope="module")
def inputs() -> dict[str, bytes]:
    return hostile_inputs()


def test_a_worker_answers_the_hostile_frame_and_scans_at_once_and_stays_alive(
    redis_server: RedisServer,
    start_worker: Callable[..., WorkerProcess],
    file_root: Path,
    inputs: dict[str, bytes],
) -> None:
    queue = "qr-hostile-raster"
    worker = start_worker(redis_server.url, queue)
    for name, data in inputs.items():
        (file_root / name).write_bytes(data)
    (file_root / "control.png").write_bytes(digital_invoice(1717).data)

    def run(name: str, timeout: float) -> tuple[dict[str, Any], float]:
        reply_to = reply_list()
        started = time.monotonic()
        payload = {"image": f"file://{file_root}/{name}", "reply_to": reply_to}
        producer.enqueue(redis_server.client(), {**payload, "deadline_ms": 1000}, queue=queue)
        return wait_result(redis_server, reply_to, timeout=timeout), time.monotonic() - started

    warm, _ = run("control.png", 120)  # the worker loads its engine first
    assert warm["ok"] is True
    alive = set(worker.descendants())
    for name, check in (
        ("frame.gif", "frame 2"),
        ("scans.jpg", "QRW_MAX_JPEG_SCANS"),
        ("slow-scans.jpg", "QRW_MAX_JPEG_SCAN_PIXELS"),
    ):
        result, seconds = run(name, 60)
        assert result["error"]["code"] == "image_too_large", result
        assert check in result["error"]["message"]
        assert seconds < 1.0 + 1.0, (name, seconds)  # within the deadline + 1 s
    after, _ = run("control.png", 60)
    assert after["ok"] is True and after["codes"]
    assert worker.process.poll() is None
    assert alive <= set(worker.descendants())  # no worker process died and was respawned


@pytest.fixture(scope="module")
def shim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ShimProcess]:
    log = tmp_path_factory.mktemp("hostile-raster-shim") / "shim.log"
    server = ShimProcess({"QRW_HTTP_CONCURRENCY": "2", "QRW_LOG_FORMAT": "json"}, log=log)
    yield server
    server.stop()


def test_the_shim_answers_413_at_once_for_each_and_keeps_serving(
    shim: ShimProcess, inputs: dict[str, bytes]
) -> None:
    with httpx.Client(base_url=shim.url, timeout=60) as client:
        for name, data in inputs.items():
            started = time.monotonic()
            response = client.post("/detect", params={"deadline_ms": "1000"}, content=data)
            elapsed = time.monotonic() - started
            assert response.status_code == 413, (name, response.text)
            assert response.json()["error"]["code"] == "image_too_large"
            assert elapsed < 2.0, (name, elapsed)
        assert client.get("/healthz").status_code == 200
        assert client.post("/detect", content=digital_invoice(1718).data).status_code == 200
    assert shim.process.poll() is None
