"""Property: no text and no bytes make the parser raise. `registry.recognise` is called
directly, so `parse`'s safety net cannot hide a bug; the generated inputs start like the
schemes so they reach the parsers, not just the dispatch."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from worker.schemes import Payload
from worker.schemes.registry import recognise

PREFIXES = [
    "",
    "https://www2.agenciatributaria.gob.es/wlpl/TIKE-CONT/ValidarQR?",
    "https://batuz.eus/QRTBAI/?id=TBAI-",
    "https://verificacfdi.facturaelectronica.sat.gob.mx/default.aspx?id=",
    "https://www.afip.gob.ar/fe/qr/?p=",
    "https://catalogo-vpfe.dian.gov.co/document/searchqr?documentkey=",
    "https://www.nfce.fazenda.sp.gov.br/qrcode?p=35250312345678000195650010000000421123456783|",
    "https://x.br/q?chNFe=1&nVersao=100&",
    "https://qr.ksef.mf.gov.pl/invoice/",
    "https://qr.ksef.mf.gov.pl/certificate/",
    "https://ecf.dgii.gov.do/ConsultaTimbre?",
    "https://x.py/q?nVersion=150&cHashQR=",
    "20601234565|01|",
    "NumFac: ",
    "A:509999999*B:",
    "AQ",
    "01",
    "BCD\n",
    "BCD\n001\n",
    "SPC\n",
    "SPC\r\n0200\r\n1\r\n",
    "SPD*1.0*",
    "SID*",
    "ST00011",
    "ST00012|",
    "ST00013",
    "UPNQR\n",
    "000201",
    "?re=",
    "0123456789ABCDEFGHIJKLMNOPQRSTUV",
    "5265877635-20250826-",
]
BYTE_PREFIXES = [b"", b"\x01", b"\x01\x05abcde\x02", b"BCD\n002\n2\n", b"ST00011|", b"UPNQR\n"]


def _check(result: Payload | None) -> None:
    if result is not None:
        assert isinstance(result.scheme, str)
        result.to_dict()  # serialisable, whatever came in


@settings(max_examples=600, deadline=None)
@given(st.sampled_from(PREFIXES), st.text(max_size=400))
def test_random_text_never_makes_the_parser_raise(prefix: str, rest: str) -> None:
    text = prefix + rest
    _check(recognise(text, None))
    _check(recognise(text, text.encode("utf-8", "surrogatepass")))


@settings(max_examples=600, deadline=None)
@given(st.sampled_from(BYTE_PREFIXES), st.binary(max_size=400))
def test_random_bytes_never_make_the_parser_raise(prefix: bytes, rest: bytes) -> None:
    data = prefix + rest
    _check(recognise(None, data))
    _check(recognise(data.decode("latin-1"), data))
    _check(recognise(data.decode("utf-8", "replace"), data))


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(PREFIXES),
    st.lists(
        st.sampled_from(
            [
                "|",
                "*",
                "&",
                "=",
                ":",
                "\n",
                "\r\n",
                "%",
                "%zz",
                "+",
                "/",
                "-",
                "0",
                "9",
                "A",
                "Z",
                "RF",
                "CH",
                "TBAI-",
                "p=",
                "id=",
                "cr=",
            ]
        ),
        max_size=60,
    ),
)
def test_separator_soup_never_makes_the_parser_raise(prefix: str, pieces: list[str]) -> None:
    text = prefix + "".join(pieces)
    _check(recognise(text, text.encode("utf-8")))
