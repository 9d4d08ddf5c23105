"""The reference digest's synthetic examples (../shared/reference/invoice-qr-payloads.md), each
scheme's text with the fields it must yield: what the scheme tests check parse() against and
what `python -m worker.bench.schemes` times parse() on. Test and benchmark data, never read by
the runtime."""

from __future__ import annotations

import base64
import json

CFDI_URL = "https://verificacfdi.facturaelectronica.sat.gob.mx/default.aspx"
AFIP_JSON = {
    "ver": 1,
    "fecha": "2025-03-15",
    "cuit": 30712345671,
    "ptoVta": 3,
    "tipoCmp": 6,
    "nroCmp": 1234,
    "importe": 1210.5,
    "moneda": "PES",
    "ctz": 1,
    "tipoDocRec": 96,
    "nroDocRec": 22333444,
    "tipoCodAut": "E",
    "codAut": 75123456789012,
}
CUFE = (
    "0ef0cdd0f021bdc01851872869cf60e9115e3d051afaac57abdd274870017a13"
    "b8b05e0fd17d5d0839805309e154db7d"
)
QRBILL_LINES = [
    "SPC", "0200", "1", "CH4431999123000889012",
    "S", "Acme Services AG", "Bahnhofstrasse", "1", "8001", "Zürich", "CH",
    "", "", "", "", "", "", "",
    "1949.75", "CHF",
    "S", "Pia Muster", "Seeweg", "5", "3000", "Bern", "CH",
    "QRR", "210000000003139471430009017", "Rechnung 42", "EPD",
]  # fmt: skip
RU_NAME = "ООО «Пример»"  # noqa: RUF001 - Cyrillic on purpose
ZATCA_B64 = (
    "AQ9BY21lIFRyYWRpbmcgQ28CDzM5OTk5OTk5OTkwMDAwMwMUMjAyNS0wMy0xNVQxMDoxNTozMFoE"
    "BzExNTAuMDAFBjE1MC4wMA=="
)


def afip_url(**changes: object) -> str:
    record = {**AFIP_JSON, **changes}
    p = base64.b64encode(json.dumps(record, separators=(",", ":")).encode()).decode()
    return f"https://www.afip.gob.ar/fe/qr/?p={p}"


def tlv(tag: int, value: bytes) -> bytes:
    return bytes((tag, len(value))) + value


ZATCA_RAW = b"".join(
    [
        tlv(1, b"Acme Trading Co"),
        tlv(2, b"399999999900003"),
        tlv(3, b"2025-03-15T10:15:30Z"),
        tlv(4, b"1150.00"),
        tlv(5, b"150.00"),
    ]
)

# The digest's synthetic examples, each with the fields it must yield.
DIGEST_EXAMPLES: dict[str, tuple[str, dict[str, str]]] = {
    "es.verifactu": (
        "https://www2.agenciatributaria.gob.es/wlpl/TIKE-CONT/ValidarQR?nif=B12345674"
        "&numserie=FA-2025%2F0042&fecha=15-03-2025&importe=1210.00",
        {
            "issuer_tax_id": "B12345674",
            "invoice_number": "FA-2025/0042",
            "issue_date": "2025-03-15",
            "total": "1210.00",
        },
    ),
    "es.ticketbai": (
        "https://batuz.eus/QRTBAI/?id=TBAI-B12345674-150325-QnJ1bm9TaWduY-225&s=A"
        "&nf=2025-0042&i=121.00&cr=063",
        {
            "issuer_tax_id": "B12345674",
            "tbai_id": "TBAI-B12345674-150325-QnJ1bm9TaWduY-225",
            "invoice_series": "A",
            "invoice_number": "2025-0042",
            "issue_date": "2025-03-15",
            "total": "121.00",
        },
    ),
    "mx.cfdi": (
        f"{CFDI_URL}?id=5FB2822E-396D-4725-8521-CDC4BDD20CCF&re=EKU9003173C9"
        "&rr=XAXX010101000&tt=1160.0&fe=q0rX7A==",
        {
            "uuid": "5FB2822E-396D-4725-8521-CDC4BDD20CCF",
            "issuer_tax_id": "EKU9003173C9",
            "buyer_tax_id": "XAXX010101000",
            "total": "1160.0",
            "signature": "q0rX7A==",
        },
    ),
    "ar.afip": (
        "https://www.afip.gob.ar/fe/qr/?p=eyJ2ZXIiOjEsImZlY2hhIjoiMjAyNS0wMy0xNSIsImN1aXQiOjMw"
        "NzEyMzQ1NjcxLCJwdG9WdGEiOjMsInRpcG9DbXAiOjYsIm5yb0NtcCI6MTIzNCwiaW1wb3J0ZSI6MTIxMC41"
        "LCJtb25lZGEiOiJQRVMiLCJjdHoiOjEsInRpcG9Eb2NSZWMiOjk2LCJucm9Eb2NSZWMiOjIyMzMzNDQ0LCJ0"
        "aXBvQ29kQXV0IjoiRSIsImNvZEF1dCI6NzUxMjM0NTY3ODkwMTJ9",
        {
            "issuer_tax_id": "30712345671",
            "issue_date": "2025-03-15",
            "invoice_number": "1234",
            "point_of_sale": "3",
            "total": "1210.5",
            "currency": "PES",
            "authorization_code": "75123456789012",
        },
    ),
    "pe.sunat": (
        "20601234565|01|F001|00000123|183.05|1200.00|2025-03-15|6|20100070970|",
        {
            "issuer_tax_id": "20601234565",
            "document_type": "01",
            "invoice_series": "F001",
            "invoice_number": "00000123",
            "tax_amount": "183.05",
            "total": "1200.00",
            "issue_date": "2025-03-15",
            "buyer_tax_id": "20100070970",
        },
    ),
    "co.dian": (
        "NumFac: SETP990000002\nFecFac: 2025-03-15\nHorFac: 10:15:30-05:00\nNitFac: 900123456\n"
        "DocAdq: 1020304050\nValFac: 1000000.00\nValIva: 190000.00\nValOtroIm: 0.00\n"
        f"ValTolFac: 1190000.00\nCUFE: {CUFE}\n"
        f"QRCode: https://catalogo-vpfe-hab.dian.gov.co/document/searchqr?documentkey={CUFE}",
        {
            "invoice_number": "SETP990000002",
            "issue_date": "2025-03-15",
            "issuer_tax_id": "900123456",
            "buyer_tax_id": "1020304050",
            "tax_amount": "190000.00",
            "total": "1190000.00",
            "cufe": CUFE,
        },
    ),
    "br.nfce": (
        "https://www.homologacao.nfce.fazenda.sp.gov.br/qrcode?p=35250312345678000195650010000"
        "000421123456783|2|2|1|FB4AA3F98783448D448B6882B1B37E6328FBE91E",
        {
            "access_key": "35250312345678000195650010000000421123456783",
            "issuer_tax_id": "12345678000195",
            "issue_month": "2025-03",
            "environment": "test",
            "hash": "FB4AA3F98783448D448B6882B1B37E6328FBE91E",
        },
    ),
    "pt.at": (
        "A:509999999*B:999999990*C:Desconhecido*D:FS*E:N*F:20250315*G:FS A/42*H:JFZR4KDT-42"
        "*I1:PT*I7:100.00*I8:23.00*N:23.00*O:123.00*Q:kLp0*R:9999",
        {
            "issuer_tax_id": "509999999",
            "buyer_tax_id": "999999990",
            "document_type": "FS",
            "issue_date": "2025-03-15",
            "invoice_number": "FS A/42",
            "atcud": "JFZR4KDT-42",
            "tax_amount": "23.00",
            "total": "123.00",
            "hash": "kLp0",
        },
    ),
    "sa.zatca": (
        ZATCA_B64,
        {
            "issuer_name": "Acme Trading Co",
            "issuer_tax_id": "399999999900003",
            "issue_date": "2025-03-15",
            "timestamp": "2025-03-15T10:15:30Z",
            "total": "1150.00",
            "tax_amount": "150.00",
        },
    ),
    "pl.ksef": (
        "https://qr-test.ksef.mf.gov.pl/invoice/1111111111/15-03-2026/"
        "K5r3SbD6kRPq78qC63bWWQSfeX2pXH_5h3XM35MQAYY",
        {
            "issuer_tax_id": "1111111111",
            "issue_date": "2026-03-15",
            "hash": "K5r3SbD6kRPq78qC63bWWQSfeX2pXH_5h3XM35MQAYY",
            "environment": "test",
        },
    ),
    "epc.sct": (
        "BCD\n002\n1\nSCT\n\nAcme GmbH\nDE89370400440532013000\nEUR1210.00\n\nRF18539007547034",
        {
            "creditor_name": "Acme GmbH",
            "iban": "DE89370400440532013000",
            "total": "1210.00",
            "currency": "EUR",
            "reference": "RF18539007547034",
        },
    ),
    "ch.qrbill": (
        "\r\n".join(QRBILL_LINES),
        {
            "iban": "CH4431999123000889012",
            "creditor_name": "Acme Services AG",
            "total": "1949.75",
            "currency": "CHF",
            "reference_type": "QRR",
            "reference": "210000000003139471430009017",
            "debtor_name": "Pia Muster",
        },
    ),
    "cz.spayd": (
        "SPD*1.0*ACC:CZ6508000000192000145399*AM:480.50*CC:CZK*MSG:PLATBA ZA ZBOZI*X-VS:1234567890",
        {
            "iban": "CZ6508000000192000145399",
            "total": "480.50",
            "currency": "CZK",
            "message": "PLATBA ZA ZBOZI",
            "variable_symbol": "1234567890",
        },
    ),
    "ru.gost56042": (
        f"ST00012|Name={RU_NAME}|PersonalAcc=40702810900000000001|BankName=ПАО Банк"
        "|BIC=044525225|CorrespAcc=30101810400000000225|PayeeINN=7701234567|Sum=121050"
        "|Purpose=Оплата счета 42",
        {
            "creditor_name": RU_NAME,
            "account": "40702810900000000001",
            "bic": "044525225",
            "issuer_tax_id": "7701234567",
            "total": "1210.50",
            "currency": "RUB",
        },
    ),
}
