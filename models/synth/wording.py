"""Invented names, addresses and line items that fill an invoice page.

Only the look matters (text density and line lengths near the codes), so the
vocabulary is small and every string is drawn from the caller's generator.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

_COMPANY_HEADS = (
    "Northwind",
    "Acme",
    "Globex",
    "Initech",
    "Umbrella",
    "Stark",
    "Wayne",
    "Hooli",
    "Vandelay",
    "Soylent",
    "Nordlicht",
    "Atelier Brun",
    "Sakura",
    "Alpenrose",
    "Mercado Sol",
    "Blue Harbor",
    "Kestrel",
    "Oakridge",
    "Lumen",
    "Tamarind",
)
_COMPANY_TAILS = (
    "Trading Ltd",
    "Industries Inc.",
    "GmbH",
    "S.A.",
    "B.V.",
    "Logistics LLC",
    "& Partners",
    "Consulting AG",
    "S.r.l.",
    "Supplies Co.",
    "Services Ltd",
    "S.A. de C.V.",
)
_STREETS = (
    "Market Street",
    "Hauptstrasse",
    "Rue de la Paix",
    "Calle Mayor",
    "Via Roma",
    "Keizersgracht",
    "Industrial Park Road",
    "Avenida Paulista",
    "High Street",
    "Bahnhofstrasse",
)
_CITIES = (
    ("10115", "Berlin", "Germany"),
    ("75002", "Paris", "France"),
    ("28013", "Madrid", "Spain"),
    ("1015 CJ", "Amsterdam", "Netherlands"),
    ("00184", "Roma", "Italy"),
    ("8001", "Zurich", "Switzerland"),
    ("01310-100", "Sao Paulo", "Brazil"),
    ("06600", "Ciudad de Mexico", "Mexico"),
    ("15001", "Lima", "Peru"),
    ("1000-001", "Lisboa", "Portugal"),
    ("SW1A 1AA", "London", "United Kingdom"),
)
_ITEMS = (
    "Consulting services",
    "Software licence (annual)",
    "Office chairs",
    "Printer toner cartridge",
    "Maintenance contract",
    "Freight and handling",
    "A4 copy paper, 5 boxes",
    "Laptop stand",
    "Cloud hosting - monthly plan",
    "Installation labour (hours)",
    "Spare parts kit",
    "Training workshop",
    "Network switch 24-port",
    "Cleaning services",
    "Coffee beans 1 kg",
    "Delivery surcharge",
    "Safety gloves (pack of 12)",
    "Technical documentation",
)
_FOOTERS = (
    "Thank you for your business.",
    "Payment due within 30 days of the invoice date.",
    "Late payments are subject to interest at the statutory rate.",
    "Please quote the invoice number with your payment.",
    "Goods remain our property until paid in full.",
    "Registered office as above. Company registration no. {reg}.",
    "Bank: {bank}  IBAN: {iban}  BIC: {bic}",
    "VAT ID: {vat}  Tax office: {city}",
)
_BANKS = (
    ("Deutsche Bank", "DEUTDEFF"),
    ("ING", "INGBNL2A"),
    ("BNP Paribas", "BNPAFRPP"),
    ("Santander", "BSCHESMM"),
    ("UBS", "UBSWCHZH"),
    ("Banco do Brasil", "BRASBRRJ"),
    ("BBVA", "BBVAESMM"),
)
CURRENCIES = ("EUR", "USD", "CHF", "GBP", "MXN", "BRL", "PEN")


@dataclass(frozen=True)
class LineItem:
    description: str
    quantity: int
    unit_price: float

    @property
    def amount(self) -> float:
        return round(self.quantity * self.unit_price, 2)


@dataclass(frozen=True)
class Party:
    name: str
    address: tuple[str, ...]


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _digits(rng: np.random.Generator, n: int) -> str:
    return "".join(str(d) for d in rng.integers(0, 10, size=n))


def party(rng: np.random.Generator) -> Party:
    name = f"{_pick(rng, _COMPANY_HEADS)} {_pick(rng, _COMPANY_TAILS)}"
    postcode, city, country = _CITIES[int(rng.integers(len(_CITIES)))]
    street = f"{_pick(rng, _STREETS)} {int(rng.integers(1, 250))}"
    return Party(name, (street, f"{postcode} {city}", country))


def line_items(rng: np.random.Generator, count: int) -> list[LineItem]:
    picks = rng.choice(len(_ITEMS), size=min(count, len(_ITEMS)), replace=False)
    items = []
    for i in range(count):
        quantity = int(rng.choice((1, 1, 1, 2, 3, 5, 10, 12, 24)))
        price = round(float(np.exp(rng.uniform(np.log(2.0), np.log(2500.0)))), 2)
        items.append(LineItem(_ITEMS[int(picks[i % len(picks)])], quantity, price))
    return items


def footer_lines(rng: np.random.Generator, count: int) -> list[str]:
    bank, bic = _BANKS[int(rng.integers(len(_BANKS)))]
    values = {
        "reg": f"HRB {_digits(rng, 6)}",
        "bank": bank,
        "iban": " ".join(
            ["DE" + _digits(rng, 2), *(_digits(rng, 4) for _ in range(4)), _digits(rng, 2)]
        ),
        "bic": bic,
        "vat": f"DE{_digits(rng, 9)}",
        "city": _pick(rng, [c[1] for c in _CITIES]),
    }
    picks = rng.choice(len(_FOOTERS), size=min(count, len(_FOOTERS)), replace=False)
    return [_FOOTERS[int(i)].format(**values) for i in picks]


def invoice_number(rng: np.random.Generator) -> str:
    year = int(rng.integers(2019, 2026))
    style = int(rng.integers(3))
    if style == 0:
        return f"INV-{year}-{_digits(rng, 5)}"
    if style == 1:
        return f"F{_digits(rng, 3)}-{_digits(rng, 8)}"
    return f"{year}/{_digits(rng, 4)}"


def date_text(rng: np.random.Generator) -> str:
    year, month, day = (
        int(rng.integers(2019, 2026)),
        int(rng.integers(1, 13)),
        int(rng.integers(1, 29)),
    )
    style = int(rng.integers(3))
    if style == 0:
        return f"{year}-{month:02d}-{day:02d}"
    if style == 1:
        return f"{day:02d}.{month:02d}.{year}"
    return f"{day:02d}/{month:02d}/{year}"


def money(value: float, currency: str) -> str:
    return f"{value:,.2f} {currency}"
