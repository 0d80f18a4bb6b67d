"""Exact conversion of money to EUR minor units for AML thresholds, with configured rates,
and of EUR thresholds into a jurisdiction's currency for the money-path checks.

A rate is the price of one major unit of the currency in EUR, as a decimal string ("1.17"
for GBP): no float ever touches an amount. A currency without a configured rate, or not in
the exponent table, is an error: monitoring never guesses a rate."""

from __future__ import annotations

import decimal
import math
from collections.abc import Mapping
from decimal import ROUND_HALF_EVEN, Decimal
from fractions import Fraction

# ISO 4217 minor-unit exponents of the currencies monitoring supports.
MINOR_UNIT_EXPONENT: dict[str, int] = {
    "EUR": 2,
    "GBP": 2,
    "USD": 2,
    "CHF": 2,
    "SEK": 2,
    "NOK": 2,
    "DKK": 2,
    "PLN": 2,
    "CZK": 2,
    "HUF": 2,
    "CAD": 2,
    "AUD": 2,
    "NZD": 2,
    "JPY": 0,
    "ISK": 0,
    "BHD": 3,
    "KWD": 3,
}
_EUR_EXPONENT = MINOR_UNIT_EXPONENT["EUR"]
# Wide enough that int64 amounts times rates with many digits are exact before rounding.
_CONTEXT = decimal.Context(prec=60, rounding=ROUND_HALF_EVEN, traps=[decimal.InvalidOperation])


class UnconvertibleCurrency(ValueError):
    """No rate (or no known exponent) for the currency: the amount cannot be judged."""

    def __init__(self, currency: str) -> None:
        super().__init__(f"no EUR rate configured for {currency!r}")
        self.currency = currency


class EurConverter:
    def __init__(self, rates: Mapping[str, str]) -> None:
        self._rates: dict[str, Decimal] = {}
        for currency, text in rates.items():
            if currency not in MINOR_UNIT_EXPONENT:
                raise ValueError(f"fx_to_eur.{currency}: not a supported ISO 4217 currency")
            try:
                rate = Decimal(text)
            except (decimal.InvalidOperation, TypeError):
                raise ValueError(f"fx_to_eur.{currency}: {text!r} is not a decimal") from None
            if not rate.is_finite() or rate <= 0:
                raise ValueError(f"fx_to_eur.{currency}: a rate must be positive")
            self._rates[currency] = rate
        if self._rates.get("EUR", Decimal(1)) != 1:
            raise ValueError("fx_to_eur.EUR: the rate of EUR is 1")
        self._rates["EUR"] = Decimal(1)

    @property
    def rates(self) -> dict[str, str]:
        """The rates in force, for the evidence of a finding."""
        return {c: str(r) for c, r in sorted(self._rates.items())}

    def to_eur_minor(self, amount_minor: int, currency: str) -> int:
        """`amount_minor` of `currency` in EUR minor units, rounded half to even."""
        rate = self._rates.get(currency)
        if rate is None:
            raise UnconvertibleCurrency(currency)
        shift = _EUR_EXPONENT - MINOR_UNIT_EXPONENT[currency]
        exact = _CONTEXT.multiply(Decimal(amount_minor), rate).scaleb(shift, _CONTEXT)
        return int(exact.quantize(Decimal(1), rounding=ROUND_HALF_EVEN, context=_CONTEXT))

    def from_eur_minor(self, eur_minor: int, currency: str) -> int:
        """`eur_minor` EUR minor units in minor units of `currency`, rounded down (exactly,
        in rationals): a threshold converted this way is never looser than in EUR, since
        any amount worth the EUR threshold or more reaches it."""
        rate = self._rates.get(currency)
        if rate is None:
            raise UnconvertibleCurrency(currency)
        shift = MINOR_UNIT_EXPONENT[currency] - _EUR_EXPONENT
        return math.floor(Fraction(eur_minor) * Fraction(10) ** shift / Fraction(rate))
