"""What a code says: every scheme's synthetic example from the payload digest
(../shared/reference/invoice-qr-payloads.md) parses with its fields and all checks ok; a
corrupted check digit, CRC, TLV, date or amount is a failed check on a payload that is
still recognised; lookalikes are not claimed; odd bytes never break the parser.
"""

from __future__ import annotations

import base64
import json

import pytest

from models.synth.digest_examples import (
    AFIP_JSON,
    CFDI_URL,
    CUFE,
    DIGEST_EXAMPLES,
    QRBILL_LINES,
    RU_NAME,
    ZATCA_RAW,
    afip_url,
    tlv,
)
from worker.schemes import Outcome, Payload, parse
from worker.schemes.registry import recognise

# Checks that cannot come out ok from the code alone, by design (docs/payloads.md).
NEVER_CHECKABLE = {
    ("co.dian", "issuer_tax_id"),  # the DIAN QR writes the NIT without its DV
    ("br.nfce", "hash"),  # SHA-1 with the issuer's secret CSC
    ("br.nfce", "signature"),
    ("sa.zatca", "signature"),
    ("pl.ksef", "signature"),
    ("ru.gost56042", "account"),  # control key vs BIC: unverified
}


def outcomes(payload: Payload) -> dict[str, Outcome]:
    return {check.name: check.outcome for check in payload.checks}


def assert_all_ok(payload: Payload) -> None:
    for check in payload.checks:
        if (payload.scheme, check.name) in NEVER_CHECKABLE:
            assert check.outcome == Outcome.NOT_CHECKABLE and check.detail
        else:
            assert check.outcome == Outcome.OK, check
    assert payload.ok and payload.problems == ()


@pytest.mark.parametrize("scheme", sorted(DIGEST_EXAMPLES))
def test_the_digests_example_parses_with_its_fields_and_all_checks_ok(scheme: str) -> None:
    text, expected = DIGEST_EXAMPLES[scheme]
    payload = parse(text, text.encode("utf-8"))
    assert payload is not None and payload.scheme == scheme
    assert {k: payload.fields.get(k) for k in expected} == expected
    assert_all_ok(payload)
    # The same without the raw bytes (a caller that only has the text).
    assert parse(text) == payload


def test_payloads_serialise_to_plain_json() -> None:
    text, _ = DIGEST_EXAMPLES["epc.sct"]
    as_dict = parse(text).to_dict()  # type: ignore[union-attr]
    assert json.loads(json.dumps(as_dict)) == as_dict
    assert as_dict["scheme"] == "epc.sct" and as_dict["ok"] is True
    assert {"name": "iban", "outcome": "ok", "detail": None} in as_dict["checks"]


# --- failed checks keep the read --------------------------------------------------------------


def example(scheme: str, old: str, new: str) -> str:
    text = DIGEST_EXAMPLES[scheme][0]
    assert old in text
    return text.replace(old, new, 1)


FAILURES = [
    # corrupted check digits
    ("es.verifactu", example("es.verifactu", "nif=B12345674", "nif=B12345675"), "issuer_tax_id"),
    ("mx.cfdi", example("mx.cfdi", "EKU9003173C9", "EKU9003173C8"), "issuer_tax_id"),
    ("ar.afip", afip_url(cuit=30712345672), "issuer_tax_id"),
    ("pe.sunat", example("pe.sunat", "20601234565|", "20601234566|"), "issuer_tax_id"),
    ("br.nfce", example("br.nfce", "123456783|2", "123456784|2"), "access_key"),
    ("pt.at", example("pt.at", "A:509999999", "A:509999998"), "issuer_tax_id"),
    ("pl.ksef", example("pl.ksef", "1111111111", "1111111112"), "issuer_tax_id"),
    ("epc.sct", example("epc.sct", "DE89370400440532013000", "DE89370400440532013001"), "iban"),
    ("epc.sct", example("epc.sct", "RF18539007547034", "RF18539007547035"), "reference"),
    ("ch.qrbill", example("ch.qrbill", "9471430009017", "9471430009018"), "reference"),
    ("cz.spayd", example("cz.spayd", "CZ650800", "CZ660800"), "iban"),
    # bad CRCs
    (
        "es.ticketbai",
        example("es.ticketbai", "QnJ1bm9TaWduY-225", "QnJ1bm9TaWduY-226"),
        "tbai_id_crc8",
    ),
    ("es.ticketbai", example("es.ticketbai", "cr=063", "cr=064"), "tbai_url_crc8"),
    ("pl.ksef", "5265877635-20250826-0100001AF629-AE", "ksef_crc8"),
    # truncated TLV: the last record declares more bytes than remain
    ("sa.zatca", base64.b64encode(ZATCA_RAW[:-3]).decode(), "tlv"),
    ("sa.zatca", base64.b64encode(ZATCA_RAW + b"\x06").decode(), "tlv"),
    # wrong dates
    ("es.verifactu", example("es.verifactu", "fecha=15-03-2025", "fecha=30-02-2025"), "issue_date"),
    (
        "es.ticketbai",
        example("es.ticketbai", "-150325-", "-150325-").replace(
            "TBAI-B12345674-150325", "TBAI-B12345674-320325"
        ),
        "issue_date",
    ),
    ("ar.afip", afip_url(fecha="2025-13-01"), "issue_date"),
    ("pe.sunat", example("pe.sunat", "2025-03-15", "2025-02-29"), "issue_date"),
    ("co.dian", example("co.dian", "FecFac: 2025-03-15", "FecFac: 15/03/2025"), "issue_date"),
    ("pt.at", example("pt.at", "F:20250315", "F:20250332"), "issue_date"),
    ("pl.ksef", example("pl.ksef", "15-03-2026", "15-13-2026"), "issue_date"),
    (
        "sa.zatca",
        base64.b64encode(ZATCA_RAW.replace(b"2025-03-15T", b"2025-03-35T")).decode(),
        "issue_date",
    ),
    ("cz.spayd", example("cz.spayd", "*CC:CZK", "*CC:CZK*DT:20250230"), "due_date"),
    # malformed amounts
    ("es.verifactu", example("es.verifactu", "importe=1210.00", "importe=1.210,00"), "total"),
    ("es.ticketbai", example("es.ticketbai", "i=121.00", "i=121,00"), "total"),
    ("mx.cfdi", example("mx.cfdi", "tt=1160.0", "tt=1,160.0"), "total"),
    ("pe.sunat", example("pe.sunat", "|1200.00|", "|1200,00|"), "total"),
    ("pt.at", example("pt.at", "O:123.00", "O:123,00"), "total"),
    ("epc.sct", example("epc.sct", "EUR1210.00", "EUR1210,00"), "total"),
    ("ch.qrbill", example("ch.qrbill", "1949.75", "1949.7"), "total"),
    ("cz.spayd", example("cz.spayd", "AM:480.50", "AM:480,50"), "total"),
    ("ru.gost56042", example("ru.gost56042", "Sum=121050", "Sum=1210.50"), "total"),
    ("sa.zatca", base64.b64encode(ZATCA_RAW.replace(b"1150.00", b"1150,00")).decode(), "total"),
]


@pytest.mark.parametrize(("scheme", "text", "check"), FAILURES)
def test_a_corrupted_value_is_a_failed_check_and_the_payload_still_stands(
    scheme: str, text: str, check: str
) -> None:
    payload = recognise(text, text.encode("utf-8"))
    assert payload is not None and payload.scheme == scheme
    assert outcomes(payload)[check] == Outcome.FAILED
    assert not payload.ok
    failed = next(c for c in payload.checks if c.name == check)
    assert failed.detail  # says what is wrong


def test_a_failed_check_keeps_every_field_that_was_read() -> None:
    payload = recognise(example("epc.sct", "DE89370400440532013000", "DE89370400440532013001"))
    assert payload is not None
    assert payload.fields["iban"] == "DE89370400440532013001"  # as given, never corrected
    assert payload.fields["total"] == "1210.00" and payload.fields["creditor_name"] == "Acme GmbH"


def test_a_truncated_zatca_code_still_shows_the_records_before_the_cut() -> None:
    payload = recognise(base64.b64encode(ZATCA_RAW[:-3]).decode())
    assert payload is not None and payload.scheme == "sa.zatca"
    assert payload.fields["issuer_tax_id"] == "399999999900003"
    assert "tag 5 declares 6 bytes, 3 remain" in next(
        c.detail for c in payload.checks if c.name == "tlv"
    )


# --- pitfalls named by the digest -------------------------------------------------------------


def test_a_plus_in_a_query_value_stays_a_plus() -> None:
    # parse_qs would turn it into a space, corrupting CFDI's `fe` (last chars of a Base64 seal).
    text = example("mx.cfdi", "fe=q0rX7A==", "fe=q0+X/A==")
    assert recognise(text).fields["signature"] == "q0+X/A=="  # type: ignore[union-attr]


def test_an_rfc_holding_an_ampersand_written_as_amp_is_one_value() -> None:
    text = example("mx.cfdi", "rr=XAXX010101000", "rr=A&amp;B010101AB1")
    payload = recognise(text)
    assert payload is not None and payload.fields["buyer_tax_id"] == "A&B010101AB1"
    assert payload.fields["total"] == "1160.0"


def test_the_generic_public_rfc_passes_although_it_breaks_the_check_rule() -> None:
    payload = recognise(DIGEST_EXAMPLES["mx.cfdi"][0])
    assert next(c for c in payload.checks if c.name == "buyer_tax_id").detail == "generic RFC"  # type: ignore[union-attr]


def test_verifactu_tolerates_an_empty_first_pair_and_any_parameter_order() -> None:
    text = (
        "https://prewww2.aeat.es/wlpl/TIKE-CONT/ValidarQRNoVerifactu?&importe=241.4"
        "&fecha=01-02-2025&numserie=A%26B%20/1&nif=B12345674"
    )
    payload = recognise(text)
    assert payload is not None and payload.scheme == "es.verifactu"
    assert payload.fields["invoice_number"] == "A&B /1"
    assert payload.fields["system"] == "no_verifactu" and payload.fields["environment"] == "test"
    assert_all_ok(payload)


def test_afip_accepts_url_safe_base64_without_padding_numbers_as_strings_and_arca() -> None:
    record = {**AFIP_JSON, "codAut": "75123456789012", "fecha": "20250315"}
    p = base64.urlsafe_b64encode(json.dumps(record).encode()).decode().rstrip("=")
    payload = recognise(f"https://arca.gob.ar/fe/qr?p={p}")
    assert payload is not None and payload.scheme == "ar.afip"
    assert payload.fields["issue_date"] == "2025-03-15"
    assert payload.fields["authority"] == "arca"
    assert_all_ok(payload)


def test_afip_missing_keys_are_not_checkable_because_the_required_list_is_unverified() -> None:
    record = {k: v for k, v in AFIP_JSON.items() if k not in ("ctz", "tipoDocRec", "nroDocRec")}
    p = base64.b64encode(json.dumps(record).encode()).decode()
    payload = recognise(f"https://www.afip.gob.ar/fe/qr/?p={p}")
    assert payload is not None and outcomes(payload)["structure"] == Outcome.NOT_CHECKABLE
    assert payload.ok
    assert outcomes(recognise(afip_url(ver=2)))["structure"] == Outcome.FAILED  # type: ignore[arg-type]


def test_afip_with_a_p_that_is_no_json_is_claimed_with_a_failed_check() -> None:
    payload = recognise("https://www.afip.gob.ar/fe/qr/?p=bm90IGpzb24")
    assert payload is not None and outcomes(payload) == {"json": Outcome.FAILED}


def test_ticketbai_matches_host_and_path_case_insensitively_and_ignores_xml_escaping() -> None:
    text = example("es.ticketbai", "https://batuz.eus/QRTBAI/", "https://BATUZ.eus/qrtbai/")
    payload = recognise(text)
    assert payload is not None and payload.scheme == "es.ticketbai"
    assert outcomes(payload)["tbai_id_crc8"] == Outcome.OK
    # The URL CRC covers the URL as printed, so a changed host is a failed URL CRC.
    assert outcomes(payload)["tbai_url_crc8"] == Outcome.FAILED


def test_a_trailing_line_break_after_a_url_is_not_part_of_its_last_value() -> None:
    for scheme in ("es.verifactu", "es.ticketbai", "mx.cfdi", "pl.ksef"):
        payload = recognise(DIGEST_EXAMPLES[scheme][0] + "\r\n")
        assert payload is not None and payload.scheme == scheme
        assert_all_ok(payload)


def test_the_crc8_matches_the_digests_real_receipts() -> None:
    from worker.schemes.checks import crc8

    assert crc8(b"123456789") == 0xF4
    assert crc8(b"TBAI-46886417C-310723-asMr5NfOWtam3-") == 141
    assert crc8(b"TBAI-00000006Y-251019-btFpwP8dcLGAF-") == 237


def test_a_ksef_number_is_checked_by_its_crc8() -> None:
    payload = recognise("5265877635-20250826-0100001AF629-AF")
    assert payload is not None and payload.scheme == "pl.ksef"
    assert outcomes(payload)["ksef_crc8"] == Outcome.OK
    assert payload.fields["issue_date"] == "2025-08-26"


def test_ksef_code_ii_and_the_july_2025_layout() -> None:
    hash43 = "K5r3SbD6kRPq78qC63bWWQSfeX2pXH_5h3XM35MQAYY"
    text = f"https://qr.ksef.mf.gov.pl/certificate/Nip/1111111111/1111111111/01F2/{hash43}/c2ln"
    payload = recognise(text)
    assert payload is not None and payload.fields["code"] == "II"
    assert_all_ok(payload)
    old = f"https://ksef-test.mf.gov.pl/client-app/invoice/1111111111/15-03-2026/{hash43}"
    assert recognise(old).fields["issue_date"] == "2026-03-15"  # type: ignore[union-attr]


def test_epc_reads_its_declared_character_set_from_the_bytes() -> None:
    data = "BCD\n002\n2\nSCT\n\nBäckerei Müller\nDE89370400440532013000\nEUR5".encode("latin-1")
    payload = parse(None, data)
    assert payload is not None and payload.fields["creditor_name"] == "Bäckerei Müller"
    assert payload.fields["total"] == "5"  # generators strip trailing zeros
    assert_all_ok(payload)
    # Even when the decoder guessed another charset for the text.
    guessed = data.decode("cp1252", "replace").replace("ä", "\ufffd")
    assert parse(guessed, data).fields["creditor_name"] == "Bäckerei Müller"  # type: ignore[union-attr]


def test_epc_declaring_utf8_over_latin1_bytes_is_a_failed_structure_check() -> None:
    data = "BCD\n002\n1\nSCT\n\nBäckerei\nDE89370400440532013000".encode("latin-1")
    payload = parse(None, data)
    assert payload is not None and payload.scheme == "epc.sct"
    assert outcomes(payload)["structure"] == Outcome.FAILED


def test_epc_structure_and_limits() -> None:
    too_long = example("epc.sct", "Acme GmbH", "A" * 71)
    assert outcomes(recognise(too_long))["limits"] == Outcome.FAILED  # type: ignore[arg-type]
    both = example("epc.sct", "RF18539007547034", "RF18539007547034\nInvoice 42")
    assert outcomes(recognise(both))["structure"] == Outcome.FAILED  # type: ignore[arg-type]
    v001 = example("epc.sct", "002", "001")  # version 001 requires a BIC
    assert outcomes(recognise(v001))["structure"] == Outcome.FAILED  # type: ignore[arg-type]


def test_qrbill_rejects_a_qrr_reference_on_a_normal_iban() -> None:
    lines = list(QRBILL_LINES)
    lines[3] = "CH5604835012345678009"  # IID 04835: not a QR-IBAN
    payload = recognise("\n".join(lines))
    assert payload is not None and outcomes(payload)["structure"] == Outcome.FAILED
    assert outcomes(payload)["iban"] == Outcome.OK


def test_qrbill_with_a_trailing_line_break_is_tolerated() -> None:
    payload = recognise("\r\n".join(QRBILL_LINES) + "\r\n")
    assert payload is not None
    assert_all_ok(payload)


def test_gost_reads_windows_1251_bytes_as_its_header_declares() -> None:
    text = DIGEST_EXAMPLES["ru.gost56042"][0].replace("ST00012", "ST00011")
    data = text.encode("cp1251")
    payload = parse(data.decode("latin-1"), data)  # a decoder that guessed Latin-1
    assert payload is not None and payload.fields["creditor_name"] == RU_NAME


def test_zatca_as_raw_bytes_or_hex_is_read_with_a_failed_encoding_check() -> None:
    raw = parse(None, ZATCA_RAW)
    assert raw is not None and raw.scheme == "sa.zatca"
    assert raw.fields["issuer_tax_id"] == "399999999900003"
    assert outcomes(raw)["encoding"] == Outcome.FAILED
    hexed = parse(ZATCA_RAW.hex())
    assert hexed is not None and outcomes(hexed)["encoding"] == Outcome.FAILED


def test_zatca_phase2_tags_are_shown_as_base64() -> None:
    data = ZATCA_RAW + tlv(6, base64.b64encode(bytes(32))) + tlv(7, b"\x30\x44" + bytes(66))
    payload = parse(base64.b64encode(data).decode())
    assert payload is not None
    assert payload.fields["hash"] == base64.b64encode(bytes(32)).decode()
    assert payload.fields["signature"] == base64.b64encode(b"\x30\x44" + bytes(66)).decode()


def test_sunat_with_a_dni_buyer_and_the_optional_hash_and_signature() -> None:
    text = "10456789019|03|B001|123|0.00|45.00|15/03/2025|1|12345678|ZGlnZXN0|c2lnbg==|"
    payload = recognise(text)
    assert payload is not None and payload.scheme == "pe.sunat"
    assert payload.fields["issue_date"] == "2025-03-15"
    assert payload.fields["hash"] == "ZGlnZXN0" and payload.fields["signature"] == "c2lnbg=="
    assert_all_ok(payload)


def test_dian_accepts_key_equals_value_and_the_bare_search_url() -> None:
    block = DIGEST_EXAMPLES["co.dian"][0].replace(": ", "=")
    assert recognise(block).fields["cufe"] == CUFE  # type: ignore[union-attr]
    url = f"https://catalogo-vpfe.dian.gov.co/document/searchqr?documentkey={CUFE}"
    payload = recognise(url)
    assert payload is not None and payload.scheme == "co.dian"
    assert payload.fields["environment"] == "production"


def test_nfce_contingency_and_version_3() -> None:
    key = "35250312345678000195650010000000429123456789"  # tpEmis 9, DV recomputed
    from worker.schemes.nfce import access_key_check

    assert access_key_check(key).outcome == Outcome.OK
    v3 = f"https://www.nfce.fazenda.sp.gov.br/qrcode?p={key}|3|1|15|121.50|1|12345678000195|c2ln"
    payload = recognise(v3)
    assert payload is not None and payload.fields["issue_date"] == "2025-03-15"
    assert payload.fields["total"] == "121.50"
    assert_all_ok(payload)


def test_the_recognise_only_schemes_say_so() -> None:
    for text, scheme in (
        ("SID*1.0*ID:2025001*DD:20250315*AM:480.50", "cz.sid"),
        ("UPNQR\n\n\n\n\nJanez Novak", "si.upn"),
        (
            "https://ecf.dgii.gov.do/ecf/ConsultaTimbre?rncemisor=101010101&encf=E310000000001",
            "do.ecf",
        ),
        ("https://ekuatia.set.gov.py/consultas/qr?nVersion=150&Id=01800&cHashQR=abc", "py.sifen"),
    ):
        payload = recognise(text)
        assert payload is not None and payload.scheme == scheme
        assert outcomes(payload)["structure"] == Outcome.NOT_CHECKABLE


def test_a_pay_by_square_code_is_recognised_by_decoding_it() -> None:
    import lzma
    import struct
    import zlib

    fields = "\t".join(["", "1", "1", "12.50", "EUR", "20250315", "123", "", "", "", "", "1"])
    body = fields.encode()
    plain = struct.pack("<I", zlib.crc32(body)) + body
    filters = [{"id": lzma.FILTER_LZMA1, "lc": 3, "lp": 0, "pb": 2, "dict_size": 128 * 1024}]
    packed = lzma.compress(plain, format=lzma.FORMAT_RAW, filters=filters)
    raw = b"\x00\x00" + struct.pack("<H", len(plain)) + packed
    text = base64.b32hexencode(raw).decode().rstrip("=")
    payload = recognise(text)
    assert payload is not None and payload.scheme == "sk.bysquare"
    assert outcomes(payload) == {"structure": Outcome.NOT_CHECKABLE, "crc32": Outcome.OK}
    # Upper-case letters and digits alone are no PAY by square code.
    assert recognise("INV20250042ABCDEFGH") is None


def test_an_emv_merchant_code_is_recognised_with_its_crc16() -> None:
    body = (
        "00020101021126360014BR.GOV.BCB.PIX0114+5511999999999520400005303986"
        "5802BR5913FULANO DE TAL6008BRASILIA6304"
    )
    from worker.schemes.emv import _crc16

    payload = recognise(body + f"{_crc16(body.encode()):04X}")
    assert payload is not None and payload.scheme == "emv.merchant"
    assert outcomes(payload)["crc16"] == Outcome.OK


# --- lookalikes are not claimed ---------------------------------------------------------------

LOOKALIKES = [
    "https://www2.agenciatributaria.gob.es/wlpl/inicio?lang=es",
    "https://www2.agenciatributaria.gob.es/wlpl/TIKE-CONT/ValidarQR?lang=es&foo=bar",
    "https://batuz.eus/QRTBAI/?lang=eu",
    "https://batuz.eus/eu/inicio?id=TBAI-x",
    f"{CFDI_URL}?lang=es",
    "https://www.afip.gob.ar/fe/ayuda.asp?p=1",
    "https://www.afip.gob.ar/fe/qr/?q=x",
    "https://catalogo-vpfe.dian.gov.co/User/Login?documentkey=x",
    "https://qr.ksef.mf.gov.pl/about/1111111111",
    "https://www.nfce.fazenda.sp.gov.br/qrcode?p=123|2|1",
    "https://example.com/pay?p=35250312345678000195650010000000421123456783",
    "a|b|c|d|e|f|g|h|i|",
    "20601234565|99|F001|00000123|183.05|1200.00|2025-03-15|6|20100070970|",
    "20601234565|01|F001",
    "12345|01|F001|00000123|183.05|1200.00|2025-03-15|6|20100070970|",
    "BCD is the answer",
    "SPC Rechnung",
    "A:5 and B:6",
    "HRVHUB30\nEUR\n000000000012355\nPETAR KORETIĆ\n",  # HUB-3 is PDF417, not QR
    '<TED version="1.0"><DD><RE>97975000-5</RE></DD></TED>',  # Chile's TED is PDF417
    "INV-2025-0001",
    "Rechnung Nr. 2025-0042 · Müller & Söhne GmbH · Betrag: 1.210,00 €",
    "",
]


@pytest.mark.parametrize("text", LOOKALIKES)
def test_a_lookalike_is_not_claimed(text: str) -> None:
    assert recognise(text, text.encode("utf-8")) is None


def test_random_base64_is_not_claimed() -> None:
    import random

    rng = random.Random(7)
    for n in range(1, 600):
        raw = bytes(rng.randrange(256) for _ in range(n % 120 + 1))
        if n % 3 == 0:
            raw = b"\x01" + raw  # starts like a ZATCA record
        for text in (base64.b64encode(raw).decode(), raw.hex()):
            assert recognise(text) is None, text


# --- non-UTF-8 and binary ---------------------------------------------------------------------


def test_nothing_to_read_is_no_payload() -> None:
    assert parse(None) is None
    assert parse(None, b"") is None
    assert parse("", b"") is None


def test_binary_bytes_are_no_payload_and_do_not_raise() -> None:
    data = bytes(range(256)) * 2
    assert recognise(None, data) is None
    assert recognise(data.decode("latin-1"), data) is None
    assert recognise("\ufffd\ufffd\x00\xff", b"\xff\xfe\x00") is None


def test_replacement_characters_do_not_cost_the_payload() -> None:
    text = example("epc.sct", "Acme GmbH", "Acme \ufffd GmbH")
    payload = recognise(text)
    assert payload is not None and payload.fields["creditor_name"] == "Acme \ufffd GmbH"
    assert payload.fields["iban"] == "DE89370400440532013000"


def test_utf8_bytes_without_text_are_decoded() -> None:
    text = DIGEST_EXAMPLES["ru.gost56042"][0]
    payload = parse(None, text.encode("utf-8"))
    assert payload is not None and payload.fields["creditor_name"] == RU_NAME
