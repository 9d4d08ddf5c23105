"""The shim's API as an OpenAPI 3.1 document, served at /openapi.json.

Written by hand because the API is small and its body is raw bytes, which generators
describe poorly; the test suite drives the live server from this document and checks
every response against the schema it promises.
"""

from __future__ import annotations

from typing import Any

from worker.errors import ErrorCode

_ERROR = {
    "type": "object",
    "required": ["code", "message"],
    "properties": {
        "code": {
            "type": "string",
            "enum": [code.value for code in ErrorCode],
            "description": "A stable reason (docs/protocol.md): `encrypted_document` is a PDF "
            "that needs a password, `corrupt_image` a file that cannot be decoded.",
        },
        "message": {"type": "string"},
    },
}

_CHECK = {
    "type": "object",
    "required": ["name", "outcome", "detail"],
    "properties": {
        "name": {
            "type": "string",
            "description": "What was checked (`issuer_tax_id`, `iban`, `tbai_crc8`, `tlv`, "
            "`issue_date`, `total`...), docs/payloads.md.",
        },
        "outcome": {"type": "string", "enum": ["ok", "failed", "not_checkable"]},
        "detail": {
            "type": ["string", "null"],
            "description": "Why it failed or could not be checked.",
        },
    },
}

_PAYLOAD = {
    "type": "object",
    "description": "What the code's text says as invoice or payment data (docs/payloads.md). "
    "A failed check never drops or alters the code: the read stands, the payload says what is "
    "wrong.",
    "required": ["scheme", "ok", "fields", "checks", "problems"],
    "properties": {
        "scheme": {
            "type": "string",
            "description": "The recognised scheme: `es.verifactu`, `mx.cfdi`, `epc.sct`, "
            "`ch.qrbill`, `sa.zatca`...",
        },
        "ok": {
            "type": "boolean",
            "description": "No check failed and no problem was found.",
        },
        "fields": {
            "type": "object",
            "description": "The scheme's fields under their documented names, all text: "
            "amounts as decimal strings, dates as ISO 8601.",
            "additionalProperties": {"type": "string"},
        },
        "checks": {"type": "array", "items": _CHECK},
        "problems": {"type": "array", "items": {"type": "string"}},
    },
}

_QUAD = {
    "type": "array",
    "minItems": 4,
    "maxItems": 4,
    "items": {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2},
}

_CODE = {
    "type": "object",
    "required": ["text", "bytes_b64", "format", "quad", "page", "stage", "decoder", "payload"],
    "properties": {
        "text": {"type": "string"},
        "bytes_b64": {"type": "string", "contentEncoding": "base64"},
        "format": {"type": "string", "enum": ["QRCode", "MicroQRCode", "RMQRCode"]},
        "quad": _QUAD,
        "page": {"type": "integer", "minimum": 0},
        "stage": {"type": "string"},
        "decoder": {"type": "string"},
        "variant": {"type": "string"},
        "model": {"type": ["string", "null"]},
        "content_type": {"type": "string"},
        "symbology_identifier": {"type": "string"},
        "ec_level": {"type": "string"},
        "version": {"type": "string"},
        "errors_corrected": {
            "type": ["integer", "null"],
            "minimum": 0,
            "description": "Codewords Reed-Solomon corrected as errors: our soft decoder's "
            "reads (decoder 'qrw-soft') only, null for zxing-cpp's.",
        },
        "erasures": {
            "type": ["integer", "null"],
            "minimum": 0,
            "description": "Codewords the soft decoder filled in as erasures (unsure modules); "
            "null for zxing-cpp's reads.",
        },
        "payload": {
            "oneOf": [{"type": "null"}, _PAYLOAD],
            "description": "null when the text is no known scheme.",
        },
    },
}

_UNREAD = {
    "type": "object",
    "required": ["quad", "page", "reason", "located_by"],
    "description": "A symbol located on a page (by zxing-cpp, or a detector's box over its "
    "threshold) that no read code covers; docs/protocol.md, *Complete means complete*.",
    "properties": {
        "quad": _QUAD,
        "page": {"type": "integer", "minimum": 0},
        "reason": {
            "type": "string",
            "enum": ["deadline", "not_decoded", "ruled_out"],
            "description": "deadline: the deadline passed before every stage had tried it; "
            "not_decoded: every stage tried it and none could read it; ruled_out: a "
            "detector's box a cheaper look showed holds no code, not tried further (it leaves "
            "the page complete).",
        },
        "located_by": {
            "type": "string",
            "enum": ["zxing", "detector"],
            "description": "zxing: zxing-cpp located it by its finder patterns, most often a "
            "QR code; detector: only a detector's box, a code or a look-alike.",
        },
    },
}

_MS = {"type": "number", "minimum": 0}

DETECT_RESPONSE = {
    "type": "object",
    "required": [
        "success",
        "data",
        "model",
        "latency_ms",
        "breakdown",
        "codes",
        "timings_ms",
        "error",
    ],
    "properties": {
        "success": {
            "type": "boolean",
            "description": "True when at least one code was read and nothing failed.",
        },
        "data": {"type": ["string", "null"], "description": "The first code's text."},
        "model": {"type": "string", "description": "Detector models and runtime, or classical."},
        "latency_ms": _MS,
        "breakdown": {
            "type": "object",
            "required": ["preprocess_ms", "inference_ms", "postprocess_ms"],
            "properties": {"preprocess_ms": _MS, "inference_ms": _MS, "postprocess_ms": _MS},
        },
        "codes": {"type": "array", "items": _CODE},
        "timings_ms": {"type": "object", "additionalProperties": {"type": "number"}},
        "error": {"oneOf": [{"type": "null"}, _ERROR]},
        "format": {"type": ["string", "null"]},
        "width": {"type": "integer"},
        "height": {"type": "integer"},
        "pages": {"type": "integer"},
        "complete": {
            "type": "boolean",
            "description": "True only when every symbol located on every page was read (or "
            "ruled out: a detector's box `unread` lists as `ruled_out`).",
        },
        "stages_run": {"type": "array", "items": {"type": "string"}},
        "unread": {"type": "array", "items": _UNREAD},
        "page_kinds": {
            "type": "array",
            "items": {"enum": ["born_digital", "scanned", "mixed"]},
            "description": "A PDF's pages by kind (worker/engine/pdf_pages.py); empty otherwise.",
        },
    },
}

ERROR_RESPONSE = {
    "type": "object",
    "required": ["success", "error"],
    "properties": {"success": {"const": False}, "error": _ERROR},
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "qr-worker HTTP shim",
        "version": "1",
        "description": "Reads every QR code in an image or PDF, synchronously. A path not "
        "listed here answers 404 (components.responses.NotFound) and a method a path does "
        "not take answers 405 with an Allow header (components.responses.MethodNotAllowed), "
        "both in the error shape of every other failure.",
    },
    "paths": {
        "/detect": {
            "post": {
                "operationId": "detect",
                "summary": "Find and decode every QR code in the uploaded image or PDF.",
                "parameters": [
                    {
                        "name": "want",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string", "enum": ["all", "first"]},
                    },
                    {
                        "name": "deadline_ms",
                        "in": "query",
                        "required": False,
                        "description": "Time budget of the scan in milliseconds, ASCII digits "
                        "only; QRW_DEADLINE_MS when absent.",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 600000},
                    },
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/octet-stream": {
                            "schema": {"type": "string", "format": "binary"}
                        },
                        "image/*": {"schema": {"type": "string", "format": "binary"}},
                        "application/pdf": {"schema": {"type": "string", "format": "binary"}},
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "properties": {"file": {"type": "string", "format": "binary"}},
                            }
                        },
                    },
                },
                "responses": {
                    "200": _json(DETECT_RESPONSE, "Scanned; `codes` may be empty."),
                    "400": _json(ERROR_RESPONSE, "Bad parameters or an empty body."),
                    "408": _json(
                        ERROR_RESPONSE,
                        "request_timeout: the body did not arrive within QRW_HTTP_BODY_TIMEOUT, "
                        "or slower than QRW_HTTP_MIN_BODY_RATE (on average, or over a "
                        "QRW_HTTP_BODY_RATE_WINDOW); the connection is closed.",
                    ),
                    "413": _json(ERROR_RESPONSE, "Over the byte or pixel limit."),
                    "415": _json(ERROR_RESPONSE, "Not an image or PDF format we read."),
                    "422": _json(
                        ERROR_RESPONSE,
                        "corrupt_image: a file that cannot be decoded; encrypted_document: a "
                        "PDF that needs a password.",
                    ),
                    "500": _json(ERROR_RESPONSE, "A bug; the message says which."),
                    "503": _json(
                        ERROR_RESPONSE,
                        "busy: every scan slot stayed taken for QRW_HTTP_SLOT_WAIT_MS, or the "
                        "uploads held are at their limit; see Retry-After.",
                    ),
                    "504": _json(ERROR_RESPONSE, "The deadline passed before any code was read."),
                },
            }
        },
        "/healthz": {
            "get": {
                "operationId": "healthz",
                "responses": {"200": _json({"type": "object"}, "The process is alive.")},
            }
        },
        "/readyz": {
            "get": {
                "operationId": "readyz",
                "responses": {
                    "200": _json(
                        {"type": "object"},
                        "Engine loaded (and Redis reachable), scans not queueing; a full upload "
                        "budget does not make it unready.",
                    ),
                    "503": _json(
                        {"type": "object", "required": ["ready", "reason"]},
                        "Not ready, or saturated (every scan slot taken and requests waiting): "
                        "`reason` says which.",
                    ),
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "responses": {
                    "200": {
                        "description": "Prometheus text exposition.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
    },
    "components": {
        "responses": {
            "NotFound": _json(ERROR_RESPONSE, "invalid_request: no such path."),
            "MethodNotAllowed": _json(
                ERROR_RESPONSE,
                "invalid_request: the path does not take this method; the Allow header "
                "names those it takes.",
            ),
        }
    },
}
