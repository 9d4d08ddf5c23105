"""Which scheme a decoded code belongs to: cheap prefix and host tests first, in the
digest's recognition order (docs/payloads.md), then the one scheme's parser.

A text that is no scheme costs a few string comparisons; only a candidate is parsed.
"""

from __future__ import annotations

from worker.schemes import Payload, epc


def _text_of(text: str | None, data: bytes | None) -> str | None:
    if text is not None:
        return text
    if not data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        # Latin-1 maps every byte, so prefix tests still work; schemes that declare a
        # character set decode `data` themselves.
        return data.decode("latin-1")


def recognise(text: str | None, data: bytes | None = None) -> Payload | None:
    """The payload of a decoded code, or None when it is no known scheme."""
    s = _text_of(text, data)
    if not s:
        return None
    if epc.is_candidate(s):
        return epc.parse(s, data)
    return None
