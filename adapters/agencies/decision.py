"""How the property register decides a transfer application (the reference scenario).

:func:`decide` refuses at once, without asking anyone, an application whose buyer is
the seller or whose price is not a positive amount in an accepted currency: no other
agency learns about an application that could never succeed. Otherwise it asks, at the
same time, the tax agency for the seller's debt and the cadastre for the parcel's owners
and encumbrances in force, through an :class:`Agencies` (the bus in production,
:class:`InMemoryAgencies` in tests and demos), and refuses for every reason that applies:

- the seller owes tax (``seller_has_tax_debt``, with the total);
- the cadastre does not know the parcel (``parcel_not_found``), or does not list the
  seller among its owners (``seller_not_owner``);
- an arrest, mortgage or lien is in force on the parcel (``parcel_encumbered``, naming
  each); easements and leases do not stop a transfer.

When an agency could not be asked (the bus refused the exchange, the agency answered
with an error, the deadline passed) the decision is not final: it carries one
``check_unavailable`` refusal per agency that failed, is never recorded, and the
applicant may try again with the same request id. Every decision carries the message
ids of the queries it relied on, so an auditor finds their evidence in the gateways'
message logs.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Generic, Protocol, TypeVar

from adapters.agencies._money import format_uzs
from serai.errors import ErrorCode, Origin, SeraiError

__all__ = [
    "ACCEPTED_CURRENCIES",
    "BLOCKING_ENCUMBRANCES",
    "Agencies",
    "Answer",
    "Application",
    "CheckUnavailableError",
    "Decision",
    "EncumbranceInForce",
    "InMemoryAgencies",
    "Inquiry",
    "Reason",
    "Refusal",
    "decide",
]

_T = TypeVar("_T")
_T_co = TypeVar("_T_co", covariant=True)

#: Currencies a price may be in.
ACCEPTED_CURRENCIES: Final = frozenset({"UZS"})
#: Kinds of encumbrance in force that stop a transfer (property.v1: arrest, mortgage, lien).
BLOCKING_ENCUMBRANCES: Final = frozenset({"arrest", "mortgage", "lien"})


class Reason(enum.StrEnum):
    """Why a transfer is refused (``property.v1.RefusalReason`` without its prefix)."""

    SELLER_HAS_TAX_DEBT = "seller_has_tax_debt"
    SELLER_NOT_OWNER = "seller_not_owner"
    PARCEL_ENCUMBERED = "parcel_encumbered"
    PARCEL_NOT_FOUND = "parcel_not_found"
    BUYER_IS_SELLER = "buyer_is_seller"
    INVALID_PRICE = "invalid_price"
    CHECK_UNAVAILABLE = "check_unavailable"


@dataclass(frozen=True, slots=True)
class Refusal:
    """One reason for refusal and its particulars for the applicant."""

    reason: Reason
    detail: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Application:
    """A transfer application as received (its ids already checked for form)."""

    request_id: str
    cadastral_number: str
    seller_id: str
    buyer_id: str
    #: Agreed price in minor units; None when the application has none.
    price_minor: int | None
    currency: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Inquiry:
    """On whose behalf the queries are made: ``x-road-user-id`` and ``x-road-issue``."""

    user_id: str = ""
    issue: str = ""


@dataclass(frozen=True, slots=True)
class Answer(Generic[_T_co]):
    """An agency's answer and the message id of the exchange that carried it."""

    value: _T_co
    message_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class EncumbranceInForce:
    """An encumbrance the cadastre lists as in force."""

    encumbrance_id: str
    type: str  # "mortgage", "lien", "arrest", "easement" or "lease"
    holder_name: str
    registered_on: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """The outcome of :func:`decide` (see the module docstring for ``final``)."""

    registered: bool
    refusals: tuple[Refusal, ...]
    evidence: tuple[str, ...]
    final: bool


class CheckUnavailableError(SeraiError):
    """An agency could not be asked; ``detail`` says why for the applicant."""

    default_code = ErrorCode.PROVIDER_UNAVAILABLE
    default_origin = Origin.PROVIDER

    def __init__(self, agency: str, detail: str, *, message_id: str = "") -> None:
        super().__init__(f"the {agency} could not be asked: {detail}")
        self.agency = agency
        self.detail = detail
        self.message_id = message_id


class Agencies(Protocol):
    """The tax agency and the cadastre as the property register asks them. Each method
    raises :class:`CheckUnavailableError` when the agency cannot be asked."""

    async def tax_debt(self, taxpayer_id: str, inquiry: Inquiry) -> Answer[int]:
        """The taxpayer's total outstanding debt in minor units of UZS."""
        ...

    async def parcel_owners(
        self, cadastral_number: str, inquiry: Inquiry
    ) -> Answer[tuple[str, ...] | None]:
        """The ids of the parcel's owners; None when the cadastre does not know it."""
        ...

    async def encumbrances(
        self, cadastral_number: str, inquiry: Inquiry
    ) -> Answer[tuple[EncumbranceInForce, ...] | None]:
        """The encumbrances in force on the parcel; None when the parcel is unknown."""
        ...


async def decide(application: Application, agencies: Agencies, inquiry: Inquiry) -> Decision:
    """Decide ``application`` (module docstring)."""
    local = _local_refusals(application)
    if local:
        return Decision(registered=False, refusals=local, evidence=(), final=True)
    seller, parcel = application.seller_id, application.cadastral_number
    async with asyncio.TaskGroup() as group:
        debt_task = group.create_task(_attempt(agencies.tax_debt(seller, inquiry)))
        owners_task = group.create_task(_attempt(agencies.parcel_owners(parcel, inquiry)))
        burdens_task = group.create_task(_attempt(agencies.encumbrances(parcel, inquiry)))
    debt, owners, burdens = debt_task.result(), owners_task.result(), burdens_task.result()
    evidence = tuple(
        mid for mid in (_message_id(debt), _message_id(owners), _message_id(burdens)) if mid
    )
    if (
        isinstance(debt, CheckUnavailableError)
        or isinstance(owners, CheckUnavailableError)
        or isinstance(burdens, CheckUnavailableError)
    ):
        failures = [r for r in (debt, owners, burdens) if isinstance(r, CheckUnavailableError)]
        unavailable = tuple(
            Refusal(Reason.CHECK_UNAVAILABLE, f"the {f.agency} could not be asked: {f.detail}")
            for f in _one_per_agency(failures)
        )
        return Decision(registered=False, refusals=unavailable, evidence=evidence, final=False)
    refusals = [*_debt_refusals(seller, debt.value), *_owner_refusals(application, owners.value)]
    if burdens.value is not None:
        refusals.extend(_encumbrance_refusals(parcel, burdens.value))
    return Decision(
        registered=not refusals, refusals=tuple(refusals), evidence=evidence, final=True
    )


@dataclass
class InMemoryAgencies:
    """:class:`Agencies` over dicts, for tests and demos. ``failures`` maps a method name
    (``tax_debt``, ``parcel_owners``, ``encumbrances``) to the error it raises; every
    answer gets a fresh message id ``mem-N``, and ``calls`` records (method, argument,
    inquiry)."""

    debts: Mapping[str, int] = field(default_factory=dict)
    owners: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    burdens: Mapping[str, tuple[EncumbranceInForce, ...]] = field(default_factory=dict)
    failures: dict[str, CheckUnavailableError] = field(default_factory=dict)
    calls: list[tuple[str, str, Inquiry]] = field(default_factory=list)

    async def tax_debt(self, taxpayer_id: str, inquiry: Inquiry) -> Answer[int]:
        self._called("tax_debt", taxpayer_id, inquiry)
        if taxpayer_id not in self.debts:
            raise CheckUnavailableError(
                "tax agency", f"NOT_FOUND: no taxpayer {taxpayer_id} is registered"
            )
        return Answer(self.debts[taxpayer_id], self._message_id())

    async def parcel_owners(
        self, cadastral_number: str, inquiry: Inquiry
    ) -> Answer[tuple[str, ...] | None]:
        self._called("parcel_owners", cadastral_number, inquiry)
        return Answer(self.owners.get(cadastral_number), self._message_id())

    async def encumbrances(
        self, cadastral_number: str, inquiry: Inquiry
    ) -> Answer[tuple[EncumbranceInForce, ...] | None]:
        self._called("encumbrances", cadastral_number, inquiry)
        if cadastral_number not in self.owners:
            return Answer(None, self._message_id())
        return Answer(self.burdens.get(cadastral_number, ()), self._message_id())

    def _called(self, method: str, argument: str, inquiry: Inquiry) -> None:
        self.calls.append((method, argument, inquiry))
        failure = self.failures.get(method)
        if failure is not None:
            raise failure

    def _message_id(self) -> str:
        return f"mem-{len(self.calls)}"


def _local_refusals(application: Application) -> tuple[Refusal, ...]:
    refusals = []
    if application.buyer_id == application.seller_id:
        refusals.append(
            Refusal(Reason.BUYER_IS_SELLER, f"buyer and seller are both {application.seller_id}")
        )
    if application.price_minor is None:
        refusals.append(Refusal(Reason.INVALID_PRICE, "the application states no price"))
    elif application.currency not in ACCEPTED_CURRENCIES:
        accepted = ", ".join(sorted(ACCEPTED_CURRENCIES))
        refusals.append(
            Refusal(
                Reason.INVALID_PRICE,
                f"currency {application.currency[:8]!a} is not accepted (only {accepted})",
            )
        )
    elif application.price_minor <= 0:
        refusals.append(
            Refusal(
                Reason.INVALID_PRICE,
                f"the price must be positive, not {format_uzs(application.price_minor)}",
            )
        )
    return tuple(refusals)


async def _attempt(query: Awaitable[Answer[_T]]) -> Answer[_T] | CheckUnavailableError:
    try:
        return await query
    except CheckUnavailableError as exc:
        return exc


def _message_id(result: Answer[object] | CheckUnavailableError) -> str:
    return result.message_id


def _one_per_agency(failures: Sequence[CheckUnavailableError]) -> list[CheckUnavailableError]:
    seen: set[str] = set()
    out = []
    for failure in failures:
        if failure.agency not in seen:
            seen.add(failure.agency)
            out.append(failure)
    return out


def _debt_refusals(seller_id: str, debt_minor: int) -> list[Refusal]:
    if debt_minor <= 0:
        return []
    return [
        Refusal(
            Reason.SELLER_HAS_TAX_DEBT,
            f"the tax agency reports outstanding tax debt of {format_uzs(debt_minor)}"
            f" owed by {seller_id}",
        )
    ]


def _owner_refusals(application: Application, owners: tuple[str, ...] | None) -> list[Refusal]:
    parcel = application.cadastral_number
    if owners is None:
        return [Refusal(Reason.PARCEL_NOT_FOUND, f"the cadastre has no parcel {parcel}")]
    if application.seller_id not in owners:
        return [
            Refusal(
                Reason.SELLER_NOT_OWNER,
                f"the cadastre does not list {application.seller_id} among the owners of {parcel}",
            )
        ]
    return []


def _encumbrance_refusals(
    parcel: str, encumbrances: tuple[EncumbranceInForce, ...]
) -> list[Refusal]:
    blocking = [e for e in encumbrances if e.type in BLOCKING_ENCUMBRANCES]
    if not blocking:
        return []
    listed = "; ".join(
        f"{e.type} {e.encumbrance_id} held by {e.holder_name} since {e.registered_on}"
        for e in blocking
    )
    return [Refusal(Reason.PARCEL_ENCUMBERED, f"{parcel} is encumbered: {listed}")]
