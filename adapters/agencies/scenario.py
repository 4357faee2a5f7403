"""The identifiers of the reference scenario (DESIGN, top), as the example agencies'
sample data holds them for the fixed seed.

:mod:`adapters.agencies.sampledata` plants these rows in every database it generates,
whatever the seed, and the tests check each property stated here against the
generated databases through the agencies' own services. ``serai demo`` uses these names.

Personal identification numbers (PINFL) are 14 digits: sex and century, date of birth
``DDMMYY``, district, serial, and a check digit (weights 7, 3, 1). Cadastral numbers are
``RR:DD:MM:QQ:BB:NNNN`` (region, district, massif, quarter, block, parcel).
"""

from __future__ import annotations

from typing import Final

from serai.identifiers import SubsystemId

__all__ = [
    "BUYER",
    "CADASTRE",
    "CLEAN_PARCEL",
    "CLEAN_SELLER",
    "DEBTOR_PARCEL",
    "DEBTOR_SELLER",
    "ENCUMBERED_PARCEL",
    "ENCUMBERED_SELLER",
    "PROPERTY",
    "TAX",
]

#: The State Tax Committee's subsystem: provides ``tax.v1.Tax``.
TAX: Final = SubsystemId.parse("UZ/GOV/STC/tax")
#: The cadastre agency's subsystem: provides ``cadastre.v1.Cadastre``.
CADASTRE: Final = SubsystemId.parse("UZ/GOV/CADASTRE/registry")
#: The Ministry of Justice's property registration: provides
#: ``property.v1.PropertyRegistration`` and consumes TAX and CADASTRE.
PROPERTY: Final = SubsystemId.parse("UZ/GOV/MINJUST/property")

#: A residential parcel in Tashkent with one owner, CLEAN_SELLER (whole share), and no
#: encumbrance in force (one mortgage on it was released in 2019): a transfer of it by
#: CLEAN_SELLER to BUYER is registered.
CLEAN_PARCEL: Final = "10:09:02:01:01:0012"
#: Dilnoza Karimova: owns CLEAN_PARCEL, owes no tax (every assessment paid in full).
CLEAN_SELLER: Final = "41507862600124"

#: Aziz Rahimov: an active taxpayer with no tax debt who owns no parcel; the buyer in
#: every transfer of the scenario.
BUYER: Final = "30305621800310"

#: A residential parcel in Samarkand with one owner, DEBTOR_SELLER, and no encumbrance.
DEBTOR_PARCEL: Final = "14:05:03:02:01:0047"
#: Rustam Toshmatov: owns DEBTOR_PARCEL and owes property and land tax (two overdue
#: assessments), so a transfer of DEBTOR_PARCEL by him is refused for tax debt only.
DEBTOR_SELLER: Final = "32209712600273"

#: A commercial parcel in Bukhara with one owner, ENCUMBERED_SELLER, under a bank's
#: mortgage in force, so a transfer of it is refused as encumbered only.
ENCUMBERED_PARCEL: Final = "03:04:01:03:02:0105"
#: Gulnora Yusupova: owns ENCUMBERED_PARCEL, owes no tax.
ENCUMBERED_SELLER: Final = "42811831400488"
