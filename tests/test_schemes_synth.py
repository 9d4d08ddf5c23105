"""Every payload the project's own generator (models/synth/payloads.py) emits round-trips
through the parser: invoice and payment formats are recognised as their scheme with every
check ok, and the generator's other texts and bytes are claimed by no scheme."""

from __future__ import annotations

import numpy as np
import pytest

from models.synth.payloads import _MAKERS, PAYLOAD_KINDS, make_payload, micro_payload
from tests.test_schemes import assert_all_ok
from worker.schemes import parse
from worker.schemes.registry import recognise

# Which scheme each maker's payloads belong to (None: no scheme).
SCHEME_OF_MAKER = {
    "_sat_cfdi": "mx.cfdi",
    "_nfce": "br.nfce",
    "_at_portugal": "pt.at",
    "_verifactu": "es.verifactu",
    "_ticketbai": "es.ticketbai",
    "_sunat": "pe.sunat",
    "_epc_sepa": "epc.sct",
    "_swiss_qr_bill": "ch.qrbill",
    "_czech_spayd": "cz.spayd",
    "_russian_gost": "ru.gost56042",
    "_japanese_invoice": None,
    "_german_text": None,
    "_chinese_fapiao": None,
    "_zatca_tlv": "sa.zatca",
    "_random_bytes": None,
}
MAKERS = [(kind, maker) for kind in PAYLOAD_KINDS for maker in _MAKERS[kind]]


def test_every_maker_of_the_generator_has_its_expected_scheme() -> None:
    assert {maker.__name__ for _, maker in MAKERS} == set(SCHEME_OF_MAKER)


@pytest.mark.parametrize(
    ("kind", "maker"), MAKERS, ids=[f"{kind}-{maker.__name__[1:]}" for kind, maker in MAKERS]
)
def test_generated_payloads_round_trip_with_all_checks_ok(kind: str, maker: object) -> None:
    rng = np.random.default_rng(12)
    expected = SCHEME_OF_MAKER[maker.__name__]  # type: ignore[attr-defined]
    for _ in range(150):
        value = maker(rng)  # type: ignore[operator]
        data = value if isinstance(value, bytes) else value.encode("utf-8")
        text = None if isinstance(value, bytes) else value
        payload = recognise(text, data)
        if expected is None:
            assert payload is None, value
            continue
        assert payload is not None and payload.scheme == expected, value
        assert_all_ok(payload)
        # The read is never altered: what the fields say was in the code.
        for field in ("issuer_tax_id", "iban", "reference", "invoice_number"):
            if field in payload.fields and text is not None:
                assert payload.fields[field] in text


@pytest.mark.parametrize("kind", PAYLOAD_KINDS)
def test_make_payload_as_a_decoder_returns_it(kind: str) -> None:
    # A decoder gives the text for text payloads; for byte-mode ones zxing guesses a
    # character set (often Latin-1) and always gives the bytes.
    rng = np.random.default_rng(5)
    for _ in range(200):
        payload = make_payload(rng, kind)
        text = payload.text if payload.is_text else payload.data.decode("latin-1")
        result = parse(text, payload.data)
        if result is not None:
            assert result.ok, (result, payload.data[:80])


def test_micro_payloads_are_no_scheme() -> None:
    rng = np.random.default_rng(3)
    for _ in range(200):
        payload = micro_payload(rng)
        assert parse(payload.text, payload.data) is None
