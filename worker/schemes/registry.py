"""Which scheme a decoded code belongs to: cheap prefix and host tests first, in the
digest's recognition order (docs/payloads.md), then the one scheme's parser.

A text that is no scheme costs a few string comparisons; only a candidate is parsed, and a
candidate that does not hold together (a lookalike) is handed on, not claimed.
"""

from __future__ import annotations

from worker.schemes import (
    Payload,
    afip,
    bysquare,
    cfdi,
    dian,
    ecf,
    emv,
    epc,
    gost,
    ksef,
    nfce,
    pt,
    qrbill,
    sid,
    sifen,
    spain,
    spayd,
    sunat,
    upn,
    zatca,
)
from worker.schemes.checks import split_url

SCHEMES = (
    "es.verifactu",
    "es.ticketbai",
    "mx.cfdi",
    "ar.afip",
    "pe.sunat",
    "co.dian",
    "br.nfce",
    "pt.at",
    "sa.zatca",
    "pl.ksef",
    "epc.sct",
    "ch.qrbill",
    "cz.spayd",
    "sk.bysquare",
    "ru.gost56042",
    "si.upn",
    # recognise-only, unverified in the digest
    "cz.sid",
    "emv.merchant",
    "do.ecf",
    "py.sifen",
)


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


def _from_url(s: str) -> Payload | None:
    parts = split_url(s)
    if parts is None:
        return None
    host, path, query = parts
    if host in spain.VERIFACTU_HOSTS:
        return spain.verifactu(host, path, query)
    if host in spain.TICKETBAI_HOSTS:
        return spain.ticketbai(s, host, path, query)
    if host in cfdi.CFDI_HOSTS:
        return cfdi.cfdi(query, cfdi.CFDI_HOSTS[host])
    if host in afip.AFIP_HOSTS:
        return afip.afip(host, path, query)
    if host in dian.DIAN_HOSTS:
        return dian.dian_url(host, path, query)
    if host in ksef.HOSTS:
        return ksef.url(host, path)
    if host in ecf.ECF_HOSTS:
        return ecf.ecf(path, query)
    # NFC-e and SIFEN pages live on many state hosts: recognised by their parameters.
    if nfce.is_nfce_candidate(query):
        return nfce.nfce(query)
    if "cHashQR=" in query:
        return sifen.sifen(query)
    return None


def recognise(text: str | None, data: bytes | None = None) -> Payload | None:
    """The payload of a decoded code, or None when it is no known scheme."""
    s = _text_of(text, data)
    if s:
        payload = _from_text(s, data)
        if payload is not None:
            return payload
    if data and data[:1] == b"\x01":
        return zatca.from_bytes(data)
    return None


def _from_text(s: str, data: bytes | None) -> Payload | None:
    first = s[:1]
    if first in "hH":
        return _from_url(s.rstrip())  # a trailing line break is no part of the last value
    if first == "B":
        return epc.parse(s, data) if epc.is_candidate(s) else None
    if first == "S":
        if qrbill.is_candidate(s):
            return qrbill.parse(s)
        if s.startswith("SPD*"):
            return spayd.spayd(s)
        if s.startswith("SID*"):
            return sid.sid(s)
        if gost.is_gost_candidate(s):
            return gost.gost(s, data)
    if first == "A" and s.startswith("A:") and pt.is_candidate(s):
        return pt.parse(s)
    if first == "U" and upn.is_upn_candidate(s):
        return upn.upn(s, data)
    if first == "?" and s[1:4].lower() == "re=":
        return cfdi.cfdi_legacy(s)
    if first.isdigit():
        if sunat.is_sunat_candidate(s):
            return sunat.sunat(s)
        if ksef.is_number_candidate(s):
            return ksef.number(s)
        if s.startswith("000201"):
            payload = emv.emv(s)
            if payload is not None:
                return payload
    if dian.is_dian_block(s):
        payload = dian.dian_block(s)
        if payload is not None:
            return payload
    if zatca.is_text_candidate(s):
        payload = zatca.from_text(s)
        if payload is not None:
            return payload
    if bysquare.is_bysquare_candidate(s):
        return bysquare.bysquare(s)
    return None
