"""Realistic invoice QR payloads.

The formats mirror what real invoices carry, because the decoder's hard cases
come from them: long URLs, pipe records dense enough for version 15-25 symbols,
newline-separated payment records, non-ASCII text that needs an ECI, and
byte-mode payloads (ZATCA's Base64 TLV records, random bytes with 0x00 and 0xFF).
Check digits, CRCs and tax ids are computed per ../shared/reference/invoice-qr-payloads.md
so the payloads also pass worker.schemes' checks (tests/test_schemes_synth.py).

Look-alike characters (Cyrillic, full-width brackets, dashes) are the point of
the ``utf8`` kind, hence the RUF001 exemptions on those lines.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

PAYLOAD_KINDS: tuple[str, ...] = ("tax_url", "pipe_record", "newline_record", "utf8", "binary")


@dataclass(frozen=True)
class Payload:
    """The exact bytes put into a symbol.

    ``is_text`` promises that ``data`` is UTF-8 text a decoder should return as
    ``data.decode("utf-8")``; otherwise the bytes are opaque.
    """

    data: bytes
    is_text: bool
    kind: str

    @property
    def text(self) -> str | None:
        return self.data.decode("utf-8") if self.is_text else None


def make_payload(rng: np.random.Generator, kind: str | None = None) -> Payload:
    """Draw one payload of ``kind`` (a random kind when None)."""
    if kind is None:
        kind = PAYLOAD_KINDS[int(rng.integers(len(PAYLOAD_KINDS)))]
    try:
        makers = _MAKERS[kind]
    except KeyError:
        raise ValueError(
            f"unknown payload kind {kind!r}; expected one of {PAYLOAD_KINDS}"
        ) from None
    value = makers[int(rng.integers(len(makers)))](rng)
    if isinstance(value, bytes):
        return Payload(value, is_text=False, kind=kind)
    return Payload(value.encode("utf-8"), is_text=True, kind=kind)


def micro_payload(rng: np.random.Generator) -> Payload:
    """A reference short enough for a Micro QR symbol (at most 13 characters)."""
    style = int(rng.integers(3))
    if style == 0:
        text = f"INV-{int(rng.integers(2019, 2026))}-{int(rng.integers(10_000)):04d}"
    elif style == 1:
        text = _digits(rng, int(rng.integers(8, 14)))
    else:
        text = f"{_letters(rng, 2)}{_digits(rng, 8)}"
    return Payload(text.encode("ascii"), is_text=True, kind="micro")


# --- small helpers ---------------------------------------------------------------------------


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _digits(rng: np.random.Generator, n: int) -> str:
    return "".join(str(d) for d in rng.integers(0, 10, size=n))


def _letters(rng: np.random.Generator, n: int) -> str:
    return "".join(chr(ord("A") + int(c)) for c in rng.integers(0, 26, size=n))


def _b64(rng: np.random.Generator, n_bytes: int) -> str:
    return base64.b64encode(rng.bytes(n_bytes)).decode("ascii")


def _amount(rng: np.random.Generator, low: float = 5.0, high: float = 25_000.0) -> float:
    # Log-uniform: invoices are mostly small, a few are large.
    return round(float(np.exp(rng.uniform(np.log(low), np.log(high)))), 2)


def _date(rng: np.random.Generator) -> tuple[int, int, int]:
    return int(rng.integers(2019, 2026)), int(rng.integers(1, 13)), int(rng.integers(1, 29))


def _mod97(text: str) -> int:
    # ISO 7064 MOD 97-10 as used by IBAN and RF references: letters count as 10..35.
    numeric = "".join(str(int(c, 36)) for c in text)
    return int(numeric) % 97


def _iban(country: str, bban: str) -> str:
    check = 98 - _mod97(bban + country + "00")
    return f"{country}{check:02d}{bban}"


def _rf_reference(rng: np.random.Generator) -> str:
    body = _digits(rng, int(rng.integers(8, 16)))
    return f"RF{98 - _mod97(body + 'RF00'):02d}{body}"


def _qrr_reference(rng: np.random.Generator) -> str:
    # Swiss QR reference: 26 digits plus a recursive mod-10 check digit.
    table = (0, 9, 4, 6, 8, 2, 7, 1, 3, 5)
    body = _digits(rng, 26)
    carry = 0
    for ch in body:
        carry = table[(carry + int(ch)) % 10]
    return body + str((10 - carry) % 10)


def _mod11_dv(body: str, weights: Sequence[int]) -> int:
    total = sum(int(d) * w for d, w in zip(body, weights, strict=True))
    return total % 11


def _ruc(rng: np.random.Generator) -> str:
    body = _pick(rng, ("20", "10")) + _digits(rng, 8)
    dv = 11 - _mod11_dv(body, (5, 4, 3, 2, 7, 6, 5, 4, 3, 2))
    return body + str({10: 0, 11: 1}.get(dv, dv))


def _nif_pt(rng: np.random.Generator) -> str:
    body = _pick(rng, ("5", "1", "2")) + _digits(rng, 7)
    rest = _mod11_dv(body, (9, 8, 7, 6, 5, 4, 3, 2))
    return body + str(0 if rest < 2 else 11 - rest)


def _nfce_key(rng: np.random.Generator) -> str:
    year, month, _ = _date(rng)
    state = _pick(rng, ("35", "33", "31", "41", "43", "53"))
    # State, year-month, issuer CNPJ, model 65 (NFC-e), series, number,
    # emission type, random code; then a mod-11 check digit.
    parts = [state, f"{year % 100:02d}{month:02d}", _cnpj(rng), "65", _digits(rng, 3)]
    parts += [_digits(rng, 9), "1", _digits(rng, 8)]
    body = "".join(parts)
    weights = [2 + i % 8 for i in range(len(body))][::-1]
    rest = sum(int(d) * w for d, w in zip(body, weights, strict=True)) % 11
    return body + str(0 if rest < 2 else 11 - rest)


_RFC_ALPHABET = "0123456789ABCDEFGHIJKLMN&OPQRSTUVWXYZ Ñ"


def _rfc(rng: np.random.Generator) -> str:
    year, month, day = _date(rng)
    letters = _letters(rng, int(rng.integers(3, 5)))
    homoclave = _letters(rng, 2)
    # The homoclave's first character is one of 1-9A-V (python-stdnum's rule): fold W-Z.
    homoclave = chr(ord("A") + (ord(homoclave[0]) - ord("A")) % 22) + homoclave[1]
    body = f"{letters}{year % 100:02d}{month:02d}{day:02d}{homoclave}"
    _digits(rng, 1)  # drawn as before, so the other draws stay the same
    # Check character: the first 12 characters (left-padded with spaces), weights 13..2.
    padded = f"{body:>12}"
    total = sum(_RFC_ALPHABET.index(ch) * (13 - i) for i, ch in enumerate(padded))
    return body + _RFC_ALPHABET[(11 - total) % 11]


def _cnpj(rng: np.random.Generator) -> str:
    body = _digits(rng, 14)[:12]
    for weights in ((5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2), (6, 5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2)):
        rest = _mod11_dv(body, weights)
        body += str(0 if rest < 2 else 11 - rest)
    return body


def _cif(letter: str, digits: str) -> str:
    """A Spanish CIF: letter, 7 digits, control digit (Luhn over the 7 digits)."""
    body = digits[:7]
    odd = sum(sum(divmod(2 * int(d), 10)) for d in body[0::2])
    even = sum(int(d) for d in body[1::2])
    return f"{letter}{body}{(10 - (odd + even) % 10) % 10}"


def _crc8(text: str) -> int:
    # CRC-8, polynomial 0x07, init 0 (TicketBAI identifier and URL).
    crc = 0
    for byte in text.encode("utf-8"):
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def _cfdi_total(value: float) -> str:
    # Anexo 20: up to 6 decimals, trailing zeros dropped but at least one decimal kept.
    text = f"{value:.6f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


# --- tax_url ---------------------------------------------------------------------------------


def _sat_cfdi(rng: np.random.Generator) -> str:
    folio = str(uuid.UUID(bytes=rng.bytes(16), version=4)).upper()
    seal_tail = _b64(rng, 6)
    return (
        "https://verificacfdi.facturaelectronica.sat.gob.mx/default.aspx"
        f"?id={folio}&re={_rfc(rng)}&rr={_rfc(rng)}&tt={_cfdi_total(_amount(rng))}&fe={seal_tail}"
    )


def _nfce(rng: np.random.Generator) -> str:
    host = _pick(
        rng,
        (
            "https://www.nfce.fazenda.sp.gov.br/qrcode",
            "http://www4.fazenda.rj.gov.br/consultaNFCe/QRCode",
            "https://portalsped.fazenda.mg.gov.br/portalnfce/sistema/qrcode.xhtml",
        ),
    )
    digest = rng.bytes(20).hex().upper()
    return f"{host}?p={_nfce_key(rng)}|2|1|{int(rng.integers(1, 10))}|{digest}"


def _at_portugal(rng: np.random.Generator) -> str:
    year, month, day = _date(rng)
    base = _amount(rng, 1.0, 5_000.0)
    vat = round(base * 0.23, 2)
    doc_type = _pick(rng, ("FT", "FS", "FR", "NC"))
    series = _letters(rng, 1)
    number = int(rng.integers(1, 9999))
    fields = [
        f"A:{_nif_pt(rng)}",
        f"B:{_pick(rng, ('999999990', _nif_pt(rng)))}",
        "C:PT",
        f"D:{doc_type}",
        "E:N",
        f"F:{year}{month:02d}{day:02d}",
        f"G:{doc_type} {series}{year}/{number}",
        f"H:{_letters(rng, 4)}{_digits(rng, 4)}-{number}",
        "I1:PT",
        f"I7:{base:.2f}",
        f"I8:{vat:.2f}",
        f"N:{vat:.2f}",
        f"O:{base + vat:.2f}",
        f"Q:{_b64(rng, 3)}",
        f"R:{int(rng.integers(1, 9999)):04d}",
    ]
    return "*".join(fields)


def _verifactu(rng: np.random.Generator) -> str:
    year, month, day = _date(rng)
    nif = _cif(_pick(rng, ("A", "B")), _digits(rng, 8))
    series = f"{_letters(rng, 1)}{year}-{int(rng.integers(1, 99999)):05d}"
    return (
        "https://www2.agenciatributaria.gob.es/wlpl/TIKE-CONT/ValidarQR"
        f"?nif={nif}&numserie={series}&fecha={day:02d}-{month:02d}-{year}"
        f"&importe={_amount(rng):.2f}"
    )


def _ticketbai(rng: np.random.Generator) -> str:
    year, month, day = _date(rng)
    nif = _cif("B", _digits(rng, 8))
    signature = _b64(rng, 10)[:13].replace("+", "x").replace("/", "y")
    tbai_id = f"TBAI-{nif}-{day:02d}{month:02d}{year % 100:02d}-{signature}-"
    _digits(rng, 3)  # drawn as before, so the other draws stay the same
    tbai_id += f"{_crc8(tbai_id):03d}"  # CRC-8 of the first 36 characters
    host = _pick(rng, ("https://batuz.eus/QRTBAI/", "https://tbai.egoitza.gipuzkoa.eus/qr/"))
    query = [
        f"id={tbai_id}",
        f"s={_letters(rng, 1)}",
        f"nf={int(rng.integers(1, 99999))}",
        f"i={_amount(rng):.2f}",
    ]
    _digits(rng, 3)
    url = f"{host}?{'&'.join(query)}"
    return f"{url}&cr={_crc8(url):03d}"  # CRC-8 of the URL up to and excluding &cr=


# --- pipe_record -----------------------------------------------------------------------------


def _sunat(rng: np.random.Generator) -> str:
    year, month, day = _date(rng)
    doc_type = _pick(rng, ("01", "03"))
    series = ("F" if doc_type == "01" else "B") + f"{int(rng.integers(1, 100)):03d}"
    total = _amount(rng)
    igv = round(total - total / 1.18, 2)
    buyer_type, buyer = ("6", _ruc(rng)) if doc_type == "01" else ("1", _digits(rng, 8))
    fields = [
        _ruc(rng),
        doc_type,
        series,
        f"{int(rng.integers(1, 99_999_999)):08d}",
        f"{igv:.2f}",
        f"{total:.2f}",
        f"{year}-{month:02d}-{day:02d}",
        buyer_type,
        buyer,
        _b64(rng, 20),
    ]
    # Many issuers append the full XML signature value, which is what pushes
    # these symbols to versions 15-25.
    if rng.random() < 0.4:
        fields.append(_b64(rng, int(rng.choice((256, 384, 512)))))
    return "|".join(fields) + "|"


# --- newline_record --------------------------------------------------------------------------

_EU_CREDITORS = (
    "Red Cross of Belgium",
    "Stadtwerke Musterstadt GmbH",
    "Bäckerei Müller & Söhne KG",
    "Gemeente Amsterdam",
    "Wiener Linien GmbH & Co KG",
    "Österreichische Post AG",
    "Van der Berg Installatietechniek B.V.",
    "Fédération Wallonie-Bruxelles",
)


def _eu_iban(rng: np.random.Generator) -> tuple[str, str]:
    country = _pick(rng, ("DE", "AT", "NL", "BE"))
    if country == "DE":
        return _iban("DE", _digits(rng, 18)), _letters(rng, 4) + "DEFF" + _digits(rng, 3)
    if country == "AT":
        return _iban("AT", _digits(rng, 16)), _letters(rng, 4) + "ATWW"
    if country == "NL":
        bank = _pick(rng, ("ABNA", "INGB", "RABO", "TRIO"))
        return _iban("NL", bank + _digits(rng, 10)), bank + "NL2A"
    return _iban("BE", _digits(rng, 12)), _letters(rng, 4) + "BEBB"


def _epc_sepa(rng: np.random.Generator) -> str:
    iban, bic = _eu_iban(rng)
    structured = rng.random() < 0.5
    lines = [
        "BCD",
        "002",
        "1",
        "SCT",
        bic if rng.random() < 0.5 else "",
        _pick(rng, _EU_CREDITORS),
        iban,
        f"EUR{_amount(rng, 1.0, 9_999.0):.2f}",
        _pick(rng, ("", "GDDS", "SUPP", "SCVE")),
        _rf_reference(rng) if structured else "",
        "" if structured else f"Invoice {int(rng.integers(1000, 99999))} / {_digits(rng, 6)}",
    ]
    return "\n".join(lines)


_CH_PARTIES = (
    ("Robert Schneider AG", "Rue du Lac", "1268", "2501", "Biel"),
    ("Muster Krankenkasse", "Musterstrasse", "12", "8000", "Zürich"),
    ("Pia-Maria Rutschmann-Schnyder", "Grosse Marktgasse", "28", "9400", "Rorschach"),
    ("Café Zähringer GmbH", "Zähringerplatz", "11", "8001", "Zürich"),
    ("Régie d'Électricité SA", "Avenue de la Gare", "3", "1003", "Lausanne"),
    ("Bäckerei Emmental", "Bernstrasse", "45", "3400", "Burgdorf"),
)


def _swiss_qr_bill(rng: np.random.Generator) -> str:
    ref_type = _pick(rng, ("QRR", "SCOR", "NON"))
    # A QRR reference requires a QR-IBAN, whose bank id lies in 30000-31999.
    iid = int(rng.integers(30000, 32000)) if ref_type == "QRR" else int(rng.integers(700, 9999))
    iban = _iban("CH", f"{iid:05d}{_digits(rng, 12)}")
    creditor = _CH_PARTIES[int(rng.integers(len(_CH_PARTIES)))]
    debtor = _CH_PARTIES[int(rng.integers(len(_CH_PARTIES)))]
    reference = {"QRR": _qrr_reference(rng), "SCOR": _rf_reference(rng), "NON": ""}[ref_type]
    amount = f"{_amount(rng, 1.0, 9_999.0):.2f}" if rng.random() < 0.85 else ""
    lines = [
        "SPC",
        "0200",
        "1",
        iban,
        "S",
        *creditor,
        "CH",
        *([""] * 7),  # ultimate creditor: reserved, must stay empty
        amount,
        _pick(rng, ("CHF", "EUR")),
        "S",
        *debtor,
        "CH",
        ref_type,
        reference,
        f"Rechnung Nr. {int(rng.integers(1000, 99999))}" if rng.random() < 0.7 else "",
        "EPD",
    ]
    if rng.random() < 0.3:
        lines.append(
            f"//S1/10/{_digits(rng, 8)}/11/{_date(rng)[0] % 100:02d}0101/30/{_digits(rng, 9)}"
        )
    separator = "\r\n" if rng.random() < 0.3 else "\n"
    return separator.join(lines)


# --- utf8 ------------------------------------------------------------------------------------


def _czech_spayd(rng: np.random.Generator) -> str:
    year, month, day = _date(rng)
    iban = _iban("CZ", _digits(rng, 20))
    seller = _pick(rng, ("Žlutý kůň s.r.o.", "Pražská energetika a.s.", "Řemesla Dvořák"))
    invoice = int(rng.integers(1, 99999))
    return (
        f"SPD*1.0*ACC:{iban}*AM:{_amount(rng):.2f}*CC:CZK*DT:{year}{month:02d}{day:02d}"
        f"*MSG:Faktura č. {year}{invoice:05d} – {seller}*X-VS:{year}{invoice:05d}"  # noqa: RUF001
    )


def _russian_gost(rng: np.random.Generator) -> str:
    payee = _pick(rng, ("ООО «Ромашка»", "АО «Три кита»", "ИП Иванов Пётр Сергеевич"))  # noqa: RUF001
    year, month, day = _date(rng)
    kopecks = int(_amount(rng) * 100)
    number = int(rng.integers(1, 9999))
    return "|".join(
        [
            "ST00012",
            f"Name={payee}",
            f"PersonalAcc=40702810{_digits(rng, 12)}",
            "BankName=ПАО Сбербанк",
            "BIC=044525225",
            "CorrespAcc=30101810400000000225",
            f"Sum={kopecks}",
            f"Purpose=Оплата по счёту № {number} от {day:02d}.{month:02d}.{year}",
            f"PayeeINN={_digits(rng, 10)}",
        ]
    )


def _japanese_invoice(rng: np.random.Generator) -> str:
    seller = _pick(rng, ("株式会社山田商事", "有限会社さくら印刷", "東京電機工業株式会社"))
    year, month, day = _date(rng)
    yen = int(_amount(rng, 500.0, 2_000_000.0))
    return (
        f"請求書番号: INV-{year}-{int(rng.integers(1, 9999)):04d}\n"
        f"発行者: {seller}\n登録番号: T{_digits(rng, 13)}\n"
        f"発行日: {year}年{month}月{day}日\n合計金額: ¥{yen:,}（税込）"  # noqa: RUF001
    )


def _german_text(rng: np.random.Generator) -> str:
    seller = _pick(rng, ("Müller & Söhne GmbH", "Großhandel Weiß KG", "Bäckerei Öztürk"))
    total = f"{_amount(rng):,.2f}".replace(",", "_").replace(".", ",").replace("_", ".")
    year, month, day = _date(rng)
    return (
        f"Rechnung Nr. {year}-{int(rng.integers(1, 9999)):04d} · {seller} · "
        f"Betrag: {total} € · fällig am {day:02d}.{month:02d}.{year}"
    )


def _chinese_fapiao(rng: np.random.Generator) -> str:
    year, month, day = _date(rng)
    seller = _pick(rng, ("上海星辰科技有限公司", "北京华夏贸易有限公司", "深圳市海风电子有限公司"))
    return (
        f"01,32,,{_digits(rng, 20)},{_amount(rng):.2f},{year}{month:02d}{day:02d},,"
        f"{_digits(rng, 4)},销售方:{seller}"
    )


# --- binary ----------------------------------------------------------------------------------

# DER header of a secp256k1 SubjectPublicKeyInfo, as embedded in ZATCA phase-2 codes.
_SPKI_PREFIX = bytes.fromhex("3056301006072a8648ce3d020106052b8104000a03420004")


def _tlv(tag: int, value: bytes) -> bytes:
    return bytes((tag, len(value))) + value


def _zatca_tlv(rng: np.random.Generator) -> bytes:
    """A ZATCA code: the standard puts the TLV records into the QR as Base64 text."""
    seller = _pick(rng, ("شركة التوريدات العالمية", "Al Noor Trading Co.", "مؤسسة الريان"))
    year, month, day = _date(rng)
    total = _amount(rng)
    record = b"".join(
        [
            _tlv(1, seller.encode("utf-8")),
            _tlv(2, ("3" + _digits(rng, 13) + "3").encode("ascii")),
            _tlv(
                3,
                f"{year}-{month:02d}-{day:02d}T{int(rng.integers(24)):02d}:15:00Z".encode("ascii"),
            ),
            _tlv(4, f"{total:.2f}".encode("ascii")),
            _tlv(5, f"{total * 0.15 / 1.15:.2f}".encode("ascii")),
        ]
    )
    if rng.random() < 0.6:
        record += b"".join(
            [
                _tlv(6, _b64(rng, 32).encode("ascii")),
                _tlv(7, b"\x30\x45\x02\x21\x00" + rng.bytes(64)),
                _tlv(8, _SPKI_PREFIX + rng.bytes(64)),
                _tlv(9, b"\x30\x46\x02\x21\x00" + rng.bytes(65)),
            ]
        )
    return base64.b64encode(record)


def _random_bytes(rng: np.random.Generator) -> bytes:
    data = bytearray(rng.bytes(int(rng.integers(16, 200))))
    # Guarantee the bytes that most often break text-oriented code paths.
    zero, full = rng.choice(len(data), size=2, replace=False)
    data[zero], data[full] = 0x00, 0xFF
    return bytes(data)


# A maker returns str for text payloads and bytes for binary ones.
_MAKERS: dict[str, tuple[Callable[[np.random.Generator], str | bytes], ...]] = {
    "tax_url": (_sat_cfdi, _nfce, _at_portugal, _verifactu, _ticketbai),
    "pipe_record": (_sunat,),
    "newline_record": (_epc_sepa, _swiss_qr_bill),
    "utf8": (_czech_spayd, _russian_gost, _japanese_invoice, _german_text, _chinese_fapiao),
    "binary": (_zatca_tlv, _random_bytes),
}
