"""The seeded sample world the three example agencies' databases are cut from.

:func:`build_world` draws people and companies, their tax assessments, land parcels
with owners and encumbrances, and past transfer decisions from one
``random.Random(seed)``, in a fixed order, so the same seed gives the same world; it
reads no clock and no ``uuid4``. The rows of :mod:`adapters.agencies.scenario` are
planted whatever the seed, and the random rows never touch the scenario's people or
parcels (the scenario's sellers own only their parcel, the buyer owns none).
"""

from __future__ import annotations

import datetime as dt
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from adapters.agencies import scenario
from adapters.agencies._money import format_uzs

__all__ = [
    "AS_OF",
    "AS_OF_POSTING",
    "CURRENCY",
    "HISTORY_CLIENT",
    "SEED",
    "AssessmentRow",
    "EncumbranceRow",
    "OwnershipRow",
    "ParcelRow",
    "Person",
    "TransferRow",
    "World",
    "build_world",
]

SEED: Final = 20240915
#: The day the sample data is a snapshot of; every date is on or before it except due
#: dates of assessments not yet payable.
AS_OF: Final = dt.date(2025, 6, 30)
#: The tax database's last posting, what ``GetTaxDebtResponse.as_of`` reports.
AS_OF_POSTING: Final = dt.datetime(2025, 6, 30, 18, 0, tzinfo=dt.UTC)
#: The accounting currency of every amount.
CURRENCY: Final = "UZS"
_OGLI: Final = "o'g'li"
_QIZI: Final = "qizi"
#: Client subsystem of the past transfer applications.
HISTORY_CLIENT: Final = "UZ/GOV/MINJUST/notary"

_INDIVIDUALS: Final = 330
_COMPANIES: Final = 40
_PARCELS: Final = 420
_TRANSFERS: Final = 220

_MALE = (
    "Aziz",
    "Bekzod",
    "Jasur",
    "Rustam",
    "Sardor",
    "Otabek",
    "Shoxruh",
    "Alisher",
    "Doston",
    "Eldor",
    "Farrux",
    "Javlon",
    "Nodir",
    "Ulug'bek",
    "Sherzod",
    "Temur",
    "Anvar",
    "Bahodir",
    "Ilhom",
    "Akmal",
)
_FEMALE = (
    "Dilnoza",
    "Gulnora",
    "Madina",
    "Nilufar",
    "Shahnoza",
    "Zarina",
    "Malika",
    "Feruza",
    "Sevara",
    "Kamola",
    "Nargiza",
    "Mohira",
    "Dildora",
    "Umida",
    "Laylo",
    "Munisa",
    "Yulduz",
    "Barno",
)
_SURNAMES = (
    "Karimov",
    "Toshmatov",
    "Yusupov",
    "Rahimov",
    "Saidov",
    "Ismoilov",
    "Nazarov",
    "Mirzayev",
    "Qodirov",
    "Xolmatov",
    "Ergashev",
    "Jo'rayev",
    "Sultonov",
    "Hamidov",
    "Aliyev",
    "Usmonov",
    "Tursunov",
    "Abdullayev",
    "Umarov",
    "Rashidov",
)
_COMPANY_WORDS = (
    "Samarqand",
    "Buxoro",
    "Navro'z",
    "Oltin",
    "Baraka",
    "Zarafshon",
    "Ipak",
    "Sharq",
    "Mehnat",
    "Bunyod",
    "Orzu",
    "Tong",
    "Yangi",
    "Farovon",
)
_COMPANY_TRADES = (
    "Qurilish",
    "Savdo",
    "Don mahsulotlari",
    "To'qimachilik",
    "Agro",
    "Logistika",
    "Mebel",
    "Sut",
    "Sement",
    "Texnologiyalari",
)
_STREETS = (
    "Amir Temur",
    "Navoiy",
    "Mustaqillik",
    "Bobur",
    "Shota Rustaveli",
    "Mirzo Ulug'bek",
    "Bunyodkor",
    "Beruniy",
    "Farobiy",
    "Istiqlol",
    "Ibn Sino",
    "Alisher Navoiy",
    "Mashrab",
    "Cho'lpon",
)

#: Region code of cadastral numbers -> (region, its main city).
_REGIONS: Final = {
    "01": ("Qoraqalpog'iston Respublikasi", "Nukus"),
    "03": ("Buxoro viloyati", "Buxoro"),
    "05": ("Jizzax viloyati", "Jizzax"),
    "06": ("Farg'ona viloyati", "Farg'ona"),
    "08": ("Andijon viloyati", "Andijon"),
    "10": ("Toshkent shahri", "Toshkent"),
    "11": ("Navoiy viloyati", "Navoiy"),
    "12": ("Namangan viloyati", "Namangan"),
    "14": ("Samarqand viloyati", "Samarqand"),
    "16": ("Qashqadaryo viloyati", "Qarshi"),
    "18": ("Surxondaryo viloyati", "Termiz"),
}

#: Banks (mortgage holders), the enforcement bureau (arrests) and the tax committee
#: (liens): fixed legal entities, (tin, name).
_BANKS: Final = (
    ("200833707", "«Ipoteka-bank» ATIB"),
    ("200242936", "«Xalq banki» AJ"),
    ("202212845", "«Hamkorbank» ATB"),
    ("204396763", "«Kapitalbank» AJ"),
    ("203556071", "«Asaka bank» AJ"),
)
_ENFORCEMENT: Final = ("207080219", "Majburiy ijro byurosi")
_TAX_COMMITTEE: Final = ("201122919", "Davlat soliq qo'mitasi")


@dataclass(frozen=True, slots=True, kw_only=True)
class Person:
    """A taxpayer: a person (14-digit PINFL) or a legal entity (9-digit TIN)."""

    id: str
    name: str
    kind: str  # "individual" or "legal_entity"
    status: str  # "active", "suspended" or "deregistered"
    registered_on: dt.date
    address: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AssessmentRow:
    """One tax assessment and what has been paid against it."""

    id: str
    taxpayer_id: str
    tax_type: str
    period: str
    assessed_minor: int
    paid_minor: int
    assessed_on: dt.date
    due_date: dt.date


@dataclass(frozen=True, slots=True, kw_only=True)
class ParcelRow:
    """A land parcel (owners and encumbrances are separate rows)."""

    cadastral_number: str
    area_m2: int
    address: str
    land_use: str
    registered_on: dt.date


@dataclass(frozen=True, slots=True, kw_only=True)
class OwnershipRow:
    """A share of a parcel held by an owner."""

    cadastral_number: str
    owner_id: str
    owner_name: str
    numerator: int
    denominator: int
    registered_on: dt.date


@dataclass(frozen=True, slots=True, kw_only=True)
class EncumbranceRow:
    """A right or restriction registered against a parcel."""

    id: str
    cadastral_number: str
    type: str
    holder_id: str
    holder_name: str
    registered_on: dt.date
    released_on: dt.date | None
    description: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TransferRow:
    """A past transfer decision of the property register."""

    transfer_id: str
    request_id: str
    cadastral_number: str
    seller_id: str
    buyer_id: str
    price_minor: int
    outcome: str  # "registered" or "refused"
    registration_number: str
    decided_at: dt.datetime
    refusals: tuple[tuple[str, str], ...]  # (reason, detail)
    evidence: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class World:
    """Everything the three databases are cut from, for one seed."""

    seed: int
    people: tuple[Person, ...]
    assessments: tuple[AssessmentRow, ...]
    parcels: tuple[ParcelRow, ...]
    ownerships: tuple[OwnershipRow, ...]
    encumbrances: tuple[EncumbranceRow, ...]
    transfers: tuple[TransferRow, ...]


def build_world(seed: int = SEED) -> World:
    """The sample world of ``seed`` (see the module docstring)."""
    rng = random.Random(seed)  # noqa: S311  (reproducible sample data, not secrets)
    people = list(_scenario_people())
    taken = {p.id for p in people}
    for _ in range(_INDIVIDUALS):
        person = _random_individual(rng, taken)
        taken.add(person.id)
        people.append(person)
    companies = [_random_company(rng, taken) for _ in range(_COMPANIES)]
    people.extend(companies)
    people.extend(_institutions())
    assessments = list(_scenario_assessments())
    counter = _Counter()
    scenario_ids = {p.id for p in _scenario_people()}
    institution_ids = {p.id for p in _institutions()}
    for person in people:
        if person.id in scenario_ids or person.id in institution_ids:
            continue
        assessments.extend(_random_assessments(rng, person, counter))
    parcels, ownerships, encumbrances = _scenario_parcels()
    random_owners = [p for p in people if p.id not in scenario_ids | institution_ids]
    numbers = {p.cadastral_number for p in parcels}
    encumbrance_seq = _Counter()
    for _ in range(_PARCELS):
        parcel = _random_parcel(rng, numbers)
        numbers.add(parcel.cadastral_number)
        parcels.append(parcel)
        ownerships.extend(_random_owners(rng, parcel, random_owners))
        encumbrances.extend(_random_encumbrances(rng, parcel, encumbrance_seq))
    transfers = _random_transfers(rng, parcels, ownerships, random_owners)
    return World(
        seed=seed,
        people=tuple(people),
        assessments=tuple(assessments),
        parcels=tuple(parcels),
        ownerships=tuple(ownerships),
        encumbrances=tuple(encumbrances),
        transfers=tuple(transfers),
    )


class _Counter:
    def __init__(self) -> None:
        self.value = 0

    def next(self) -> int:
        self.value += 1
        return self.value


def _pinfl(rng: random.Random, *, female: bool, birth: dt.date) -> str:
    century_male = 3 if birth.year < 2000 else 5
    head = (
        f"{century_male + int(female)}{birth:%d%m%y}"
        f"{rng.randrange(100, 400):03d}{rng.randrange(0, 1000):03d}"
    )
    weights = (7, 3, 1)
    check = sum(int(c) * weights[i % 3] for i, c in enumerate(head)) % 10
    return f"{head}{check}"


def _address(rng: random.Random, city: str | None = None, *, flat: bool = True) -> str:
    city = city or rng.choice([c for _, c in _REGIONS.values()])
    street = rng.choice(_STREETS)
    house = rng.randrange(1, 120)
    text = f"{city} sh., {street} ko'chasi, {house}-uy"
    if flat and rng.random() < 0.5:
        text += f", {rng.randrange(1, 90)}-xonadon"
    return text


def _date_between(rng: random.Random, start: dt.date, end: dt.date) -> dt.date:
    return start + dt.timedelta(days=rng.randrange((end - start).days + 1))


def _random_individual(rng: random.Random, taken: set[str]) -> Person:
    female = rng.random() < 0.5
    birth = _date_between(rng, dt.date(1950, 1, 1), dt.date(2003, 12, 31))
    while True:
        pinfl = _pinfl(rng, female=female, birth=birth)
        if pinfl not in taken:
            break
    given = rng.choice(_FEMALE if female else _MALE)
    father = rng.choice(_MALE)
    surname = rng.choice(_SURNAMES) + ("a" if female else "")
    name = f"{surname} {given} {father} {_QIZI if female else _OGLI}"
    status = rng.choices(("active", "suspended", "deregistered"), weights=(94, 2, 4))[0]
    registered = _date_between(
        rng, max(birth + dt.timedelta(days=18 * 365), dt.date(1996, 1, 1)), dt.date(2024, 12, 31)
    )
    return Person(
        id=pinfl,
        name=name,
        kind="individual",
        status=status,
        registered_on=registered,
        address=_address(rng),
    )


def _random_company(rng: random.Random, taken: set[str]) -> Person:
    while True:
        tin = f"{rng.choice('23')}{rng.randrange(0, 10**8):08d}"
        if tin not in taken:
            taken.add(tin)
            break
    form = rng.choice(("MChJ", "MChJ", "AJ", "XK"))
    name = f"«{rng.choice(_COMPANY_WORDS)} {rng.choice(_COMPANY_TRADES)}» {form}"
    status = rng.choices(("active", "suspended", "deregistered"), weights=(88, 6, 6))[0]
    return Person(
        id=tin,
        name=name,
        kind="legal_entity",
        status=status,
        registered_on=_date_between(rng, dt.date(1994, 1, 1), dt.date(2024, 6, 30)),
        address=_address(rng, flat=False),
    )


def _institutions() -> tuple[Person, ...]:
    return tuple(
        Person(
            id=tin,
            name=name,
            kind="legal_entity",
            status="active",
            registered_on=dt.date(1995, 3, 1),
            address="Toshkent sh., Amir Temur ko'chasi, 1-uy",
        )
        for tin, name in (*_BANKS, _ENFORCEMENT, _TAX_COMMITTEE)
    )


def _scenario_people() -> tuple[Person, ...]:
    return (
        Person(
            id=scenario.CLEAN_SELLER,
            name="Karimova Dilnoza Anvar qizi",
            kind="individual",
            status="active",
            registered_on=dt.date(2008, 4, 11),
            address="Toshkent sh., Mirzo Ulug'bek ko'chasi, 14-uy, 27-xonadon",
        ),
        Person(
            id=scenario.BUYER,
            name="Rahimov Aziz Bahodir o'g'li",
            kind="individual",
            status="active",
            registered_on=dt.date(1997, 9, 2),
            address="Toshkent sh., Shota Rustaveli ko'chasi, 51-uy, 8-xonadon",
        ),
        Person(
            id=scenario.DEBTOR_SELLER,
            name="Toshmatov Rustam Ilhom o'g'li",
            kind="individual",
            status="active",
            registered_on=dt.date(1999, 2, 17),
            address="Samarqand sh., Registon ko'chasi, 3-uy",
        ),
        Person(
            id=scenario.ENCUMBERED_SELLER,
            name="Yusupova Gulnora Temur qizi",
            kind="individual",
            status="active",
            registered_on=dt.date(2005, 6, 30),
            address="Buxoro sh., Bahouddin Naqshband ko'chasi, 22-uy",
        ),
    )


def _scenario_assessments() -> tuple[AssessmentRow, ...]:
    d = dt.date
    clean, debtor = scenario.CLEAN_SELLER, scenario.DEBTOR_SELLER
    encumbered, buyer = scenario.ENCUMBERED_SELLER, scenario.BUYER
    # (taxpayer, tax, period, assessed, paid, assessed on, due): DEBTOR_SELLER alone
    # has overdue unpaid amounts (rows 6 and 7).
    table = (
        (clean, "property", "2023", 84_500_000, 84_500_000, d(2023, 3, 1), d(2023, 12, 1)),
        (clean, "property", "2024", 91_200_000, 91_200_000, d(2024, 3, 1), d(2024, 12, 1)),
        (clean, "land", "2024", 23_700_000, 23_700_000, d(2024, 3, 1), d(2024, 12, 1)),
        (buyer, "personal_income", "2024", 1_846_000_000, 1_846_000_000, d(2025, 3, 14),
         d(2025, 4, 1)),
        (debtor, "personal_income", "2022", 612_000_000, 612_000_000, d(2023, 3, 20),
         d(2023, 4, 1)),
        (debtor, "property", "2023", 126_400_000, 40_000_000, d(2023, 3, 1), d(2023, 12, 1)),
        (debtor, "land", "2024", 38_900_000, 0, d(2024, 3, 1), d(2024, 12, 1)),
        (encumbered, "property", "2024", 148_300_000, 148_300_000, d(2024, 3, 1),
         d(2024, 12, 1)),
    )  # fmt: skip
    return tuple(
        AssessmentRow(
            id=f"AS{period[:4]}9{i:06d}",
            taxpayer_id=who,
            tax_type=tax,
            period=period,
            assessed_minor=assessed,
            paid_minor=paid,
            assessed_on=on,
            due_date=due,
        )
        for i, (who, tax, period, assessed, paid, on, due) in enumerate(table, start=1)
    )


def _random_assessments(
    rng: random.Random, person: Person, counter: _Counter
) -> list[AssessmentRow]:
    kinds: tuple[str, ...]
    if person.kind == "individual":
        kinds = ("personal_income", "property", "land", "other")
        base = (40_000_000, 900_000_000)
    else:
        kinds = ("profit", "vat", "property", "land", "other")
        base = (1_000_000_000, 90_000_000_000)
    rows = []
    for _ in range(rng.choice((1, 1, 2, 2, 3))):
        tax = rng.choice(kinds)
        year = rng.randrange(max(2019, person.registered_on.year), 2025)
        period = f"{year}-Q{rng.randrange(1, 5)}" if tax == "vat" else str(year)
        assessed_on = (
            dt.date(year + 1, 3, 1)
            if tax in ("personal_income", "profit")
            else (dt.date(year, 3, 1))
        )
        due = assessed_on + dt.timedelta(days=rng.choice((30, 90, 275)))
        assessed = rng.randrange(*base) // 100 * 100
        roll = rng.random()
        paid = (
            assessed
            if roll < 0.85
            else (0 if roll < 0.93 else assessed * rng.randrange(10, 90) // 100)
        )
        rows.append(
            AssessmentRow(
                id=f"AS{year}{counter.next():07d}",
                taxpayer_id=person.id,
                tax_type=tax,
                period=period,
                assessed_minor=assessed,
                paid_minor=paid,
                assessed_on=assessed_on,
                due_date=due,
            )
        )
    return rows


def _scenario_parcels() -> tuple[list[ParcelRow], list[OwnershipRow], list[EncumbranceRow]]:
    d = dt.date
    parcels = [
        ParcelRow(
            cadastral_number=scenario.CLEAN_PARCEL,
            area_m2=600,
            land_use="residential",
            address="Toshkent sh., Mirzo Ulug'bek tumani, Qorasuv mavzesi, 14-uy",
            registered_on=d(2004, 5, 19),
        ),
        ParcelRow(
            cadastral_number=scenario.DEBTOR_PARCEL,
            area_m2=1200,
            land_use="residential",
            address="Samarqand sh., Registon ko'chasi, 3-uy",
            registered_on=d(1998, 10, 6),
        ),
        ParcelRow(
            cadastral_number=scenario.ENCUMBERED_PARCEL,
            area_m2=340,
            land_use="commercial",
            address="Buxoro sh., Bahouddin Naqshband ko'chasi, 22-uy",
            registered_on=d(2009, 2, 24),
        ),
    ]
    ownerships = [
        OwnershipRow(
            cadastral_number=scenario.CLEAN_PARCEL,
            owner_id=scenario.CLEAN_SELLER,
            owner_name="Karimova Dilnoza Anvar qizi",
            numerator=1,
            denominator=1,
            registered_on=d(2012, 8, 7),
        ),
        OwnershipRow(
            cadastral_number=scenario.DEBTOR_PARCEL,
            owner_id=scenario.DEBTOR_SELLER,
            owner_name="Toshmatov Rustam Ilhom o'g'li",
            numerator=1,
            denominator=1,
            registered_on=d(2006, 1, 25),
        ),
        OwnershipRow(
            cadastral_number=scenario.ENCUMBERED_PARCEL,
            owner_id=scenario.ENCUMBERED_SELLER,
            owner_name="Yusupova Gulnora Temur qizi",
            numerator=1,
            denominator=1,
            registered_on=d(2016, 11, 3),
        ),
    ]
    encumbrances = [
        EncumbranceRow(
            id="E-2012-000731",
            cadastral_number=scenario.CLEAN_PARCEL,
            type="mortgage",
            holder_id=_BANKS[0][0],
            holder_name=_BANKS[0][1],
            registered_on=d(2012, 8, 7),
            released_on=d(2019, 8, 12),
            description="Ipoteka krediti shartnomasi No. IK-2012/4471",
        ),
        EncumbranceRow(
            id="E-2022-004518",
            cadastral_number=scenario.ENCUMBERED_PARCEL,
            type="mortgage",
            holder_id=_BANKS[2][0],
            holder_name=_BANKS[2][1],
            registered_on=d(2022, 4, 14),
            released_on=None,
            description="Kredit shartnomasi No. HK-2022/0915, garov",
        ),
    ]
    return parcels, ownerships, encumbrances


def _random_parcel(rng: random.Random, taken: set[str]) -> ParcelRow:
    while True:
        region = rng.choice(sorted(_REGIONS))
        number = (
            f"{region}:{rng.randrange(1, 16):02d}:{rng.randrange(1, 10):02d}:"
            f"{rng.randrange(1, 6):02d}:{rng.randrange(1, 5):02d}:{rng.randrange(1, 400):04d}"
        )
        if number not in taken:
            break
    land_use = rng.choices(
        ("residential", "agricultural", "commercial", "industrial", "forest", "public", "other"),
        weights=(55, 18, 12, 7, 2, 3, 3),
    )[0]
    area = {
        "residential": (200, 2_500),
        "agricultural": (5_000, 400_000),
        "commercial": (150, 8_000),
        "industrial": (2_000, 60_000),
        "forest": (10_000, 900_000),
        "public": (500, 40_000),
        "other": (100, 5_000),
    }[land_use]
    city = _REGIONS[region][1]
    return ParcelRow(
        cadastral_number=number,
        area_m2=rng.randrange(*area),
        address=_address(rng, city, flat=False),
        land_use=land_use,
        registered_on=_date_between(rng, dt.date(1995, 1, 1), dt.date(2020, 12, 31)),
    )


def _random_owners(
    rng: random.Random, parcel: ParcelRow, people: Sequence[Person]
) -> list[OwnershipRow]:
    companies = [p for p in people if p.kind == "legal_entity"]
    individuals = [p for p in people if p.kind == "individual"]
    if parcel.land_use in ("commercial", "industrial") and rng.random() < 0.7:
        owners = [rng.choice(companies)]
    else:
        owners = rng.sample(individuals, rng.choice((1, 1, 1, 2, 2, 3)))
    denominator = len(owners)
    since = _date_between(rng, parcel.registered_on, AS_OF - dt.timedelta(days=30))
    return [
        OwnershipRow(
            cadastral_number=parcel.cadastral_number,
            owner_id=o.id,
            owner_name=o.name,
            numerator=1,
            denominator=denominator,
            registered_on=since,
        )
        for o in owners
    ]


def _random_encumbrances(
    rng: random.Random, parcel: ParcelRow, seq: _Counter
) -> list[EncumbranceRow]:
    if rng.random() >= 0.22:
        return []
    kind = rng.choices(
        ("mortgage", "lien", "arrest", "easement", "lease"), weights=(50, 12, 10, 16, 12)
    )[0]
    holder = {
        "mortgage": rng.choice(_BANKS),
        "lien": _TAX_COMMITTEE,
        "arrest": _ENFORCEMENT,
        "easement": ("200905123", "«Hududgaztaminot» AJ"),
        "lease": ("301245687", "«Sharq Agro» MChJ"),
    }[kind]
    since = _date_between(rng, parcel.registered_on, AS_OF - dt.timedelta(days=10))
    released = None
    if rng.random() < 0.35:
        released = _date_between(rng, since, AS_OF)
    description = {
        "mortgage": f"Kredit shartnomasi No. {rng.randrange(1000, 9999)}/{since.year}",
        "lien": f"Soliq qarzi bo'yicha garov, qaror No. {rng.randrange(100, 999)}",
        "arrest": f"Sud ijrochisining qarori No. {rng.randrange(10000, 99999)}",
        "easement": "Gaz quvuri uchun servitut",
        "lease": f"Uzoq muddatli ijara shartnomasi, {rng.randrange(10, 49)} yil",
    }[kind]
    return [
        EncumbranceRow(
            id=f"E-{since.year}-{seq.next():06d}",
            cadastral_number=parcel.cadastral_number,
            type=kind,
            holder_id=holder[0],
            holder_name=holder[1],
            registered_on=since,
            released_on=released,
            description=description,
        )
    ]


def _random_transfers(
    rng: random.Random,
    parcels: Sequence[ParcelRow],
    ownerships: Sequence[OwnershipRow],
    people: Sequence[Person],
) -> list[TransferRow]:
    scenario_parcels = {scenario.CLEAN_PARCEL, scenario.DEBTOR_PARCEL, scenario.ENCUMBERED_PARCEL}
    owners_of: dict[str, list[str]] = {}
    for o in ownerships:
        owners_of.setdefault(o.cadastral_number, []).append(o.owner_id)
    candidates = [p for p in parcels if p.cadastral_number not in scenario_parcels]
    decided = sorted(
        dt.datetime(2019, 1, 9, 9, tzinfo=dt.UTC)
        + dt.timedelta(seconds=rng.randrange(0, 6 * 365 * 86_400))
        for _ in range(_TRANSFERS)
    )
    rows = []
    registered_in: dict[int, int] = {}
    for when in decided:
        parcel = rng.choice(candidates)
        seller = rng.choice(owners_of[parcel.cadastral_number])
        buyer = rng.choice(people).id
        while buyer == seller:
            buyer = rng.choice(people).id
        price = rng.randrange(15_000, 900_000) * 100_000
        reasons: tuple[tuple[str, str], ...] = ()
        roll = rng.random()
        if roll < 0.08:
            debt = format_uzs(rng.randrange(1, 90_000) * 10_000)
            reasons = (("seller_has_tax_debt", f"outstanding tax debt {debt}"),)
        elif roll < 0.14:
            encumbrance = f"E-{when.year}-{rng.randrange(1, 999999):06d}"
            reasons = (("parcel_encumbered", f"mortgage {encumbrance} in force"),)
        elif roll < 0.17:
            not_owner = f"{seller} is not an owner of {parcel.cadastral_number}"
            reasons = (("seller_not_owner", not_owner),)
        registration = ""
        if not reasons:
            registered_in[when.year] = registered_in.get(when.year, 0) + 1
            registration = f"PR-{when.year}-{registered_in[when.year]:06d}"
        rows.append(
            TransferRow(
                transfer_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                request_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                cadastral_number=parcel.cadastral_number,
                seller_id=seller,
                buyer_id=buyer,
                price_minor=price,
                outcome="refused" if reasons else "registered",
                registration_number=registration,
                decided_at=when,
                refusals=reasons,
                evidence=tuple(
                    str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(3)
                ),
            )
        )
    return rows
