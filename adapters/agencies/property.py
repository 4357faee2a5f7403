"""The Ministry of Justice's property registration adapter (``UZ/GOV/MINJUST/property``):
``property.v1.PropertyRegistration``, deciding transfers by asking the tax agency and the
cadastre through its own gateway.

RegisterTransfer, in order:

1. The caller's ``x-road-*`` metadata is read and logged; ``request_id`` (1 to 128
   printable ASCII characters), ``cadastral_number``, ``seller_id`` and ``buyer_id`` are
   checked for form: a bad one is INVALID_ARGUMENT naming the field.
2. A decision already recorded for the caller's client subsystem and request id is
   returned as it is, without asking anyone again; the same request id with a different
   application is INVALID_ARGUMENT naming ``request_id``.
3. :func:`~adapters.agencies.decision.decide` asks the agencies (the queries carry the
   caller's user id, and its issue or else the request id) and decides.
4. A final decision is recorded atomically (:mod:`adapters.agencies.transfers`) and
   answered; one that could not be made (``check_unavailable``: the bus refused an
   exchange with ``access_denied``, ``provider_unavailable``, ``timestamping_overdue``
   or any other code, an agency answered an error, a deadline passed) is answered with
   an empty ``transfer_id`` and not recorded. If the register cannot write, the answer
   is UNAVAILABLE and nothing is recorded.

:class:`GatewayAgencies` is the bus side: it asks through a
:class:`~adapters.sdk.GatewayClient` with a fresh message id per query, and turns every
refusal and error into :class:`~adapters.agencies.decision.CheckUnavailableError`, the
cadastre's NOT_FOUND into "no such parcel".
"""

# The rpc methods carry the names the generated servicer gives them.
# ruff: noqa: N802

from __future__ import annotations

import datetime as dt
import logging
import sqlite3
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, TypeVar

import grpc
from google.protobuf import timestamp_pb2

from adapters.agencies._service import (
    Context,
    begin,
    cadastral_number_problem,
    person_id_problem,
)
from adapters.agencies.decision import (
    Agencies,
    Answer,
    Application,
    CheckUnavailableError,
    Decision,
    EncumbranceInForce,
    Inquiry,
    Refusal,
    decide,
)
from adapters.agencies.transfers import Transfer, TransferBook
from adapters.sdk import (
    ExchangeRefused,
    GatewayClient,
    ServiceRegistration,
    abort,
    call_with_receipt,
    invalid_argument,
    service,
)
from serai.identifiers import SubsystemId
from serai_proto.cadastre.v1 import cadastre_pb2, cadastre_pb2_grpc
from serai_proto.property.v1 import property_pb2, property_pb2_grpc
from serai_proto.tax.v1 import tax_pb2, tax_pb2_grpc

__all__ = ["AGENCY", "GatewayAgencies", "PropertyService", "property_service"]

#: The name of this agency in databases, logs and ``serai adapter run``.
AGENCY: Final = "property"
_MAX_REQUEST_ID_CHARS: Final = 128
_LOG = logging.getLogger("adapters.agencies.property")
_Resp = TypeVar("_Resp")
_T = TypeVar("_T")


def property_service(
    book: TransferBook,
    agencies: Agencies,
    *,
    clock: Callable[[], dt.datetime] | None = None,
) -> ServiceRegistration:
    """The ``property.v1.PropertyRegistration`` registration for a
    :class:`~adapters.sdk.ProviderServer`."""
    return service(
        property_pb2_grpc.add_PropertyRegistrationServicer_to_server,
        PropertyService(book, agencies, clock=clock),
        property_pb2.DESCRIPTOR.services_by_name["PropertyRegistration"],
    )


class PropertyService(property_pb2_grpc.PropertyRegistrationServicer):
    """``property.v1.PropertyRegistration`` (module docstring)."""

    def __init__(
        self,
        book: TransferBook,
        agencies: Agencies,
        *,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        self._book = book
        self._agencies = agencies
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))

    async def RegisterTransfer(
        self, request: property_pb2.RegisterTransferRequest, context: Context
    ) -> property_pb2.RegisterTransferResponse:
        caller = begin(AGENCY, context)
        await _check_application(context, request)
        application = Application(
            request_id=request.request_id,
            cadastral_number=request.cadastral_number,
            seller_id=request.seller_id,
            buyer_id=request.buyer_id,
            price_minor=request.price.amount_minor if request.HasField("price") else None,
            currency=request.price.currency,
        )
        client = str(caller.client)
        earlier = await self._read(context, self._book.find(client, application.request_id))
        if earlier is not None:
            return await _repeated(context, earlier, application)
        inquiry = Inquiry(user_id=caller.user_id, issue=caller.issue or application.request_id)
        decision = await decide(application, self._agencies, inquiry)
        decided_at = self._clock()
        if not decision.final:
            return property_pb2.RegisterTransferResponse(
                transfer=_undecided_message(application, decision, decided_at)
            )
        recorded = await self._read(
            context,
            self._book.record(
                client=client,
                message_id=caller.message_id,
                application=application,
                decision=decision,
                decided_at=decided_at,
            ),
        )
        if recorded.application != application:  # a concurrent call with the same id won
            return await _repeated(context, recorded, application)
        return property_pb2.RegisterTransferResponse(transfer=_transfer_message(recorded))

    async def GetTransfer(
        self, request: property_pb2.GetTransferRequest, context: Context
    ) -> property_pb2.GetTransferResponse:
        begin(AGENCY, context)
        if not _is_uuid(request.transfer_id):
            await invalid_argument(
                context,
                "transfer_id",
                "transfer_id: expected the id RegisterTransfer returned (a lowercase UUID),"
                f" got {_shown(request.transfer_id)}",
            )
        transfer = await self._read(context, self._book.get(request.transfer_id))
        if transfer is None:
            await abort(
                context,
                grpc.StatusCode.NOT_FOUND,
                f"no transfer {request.transfer_id} is recorded",
                field="transfer_id",
            )
        return property_pb2.GetTransferResponse(transfer=_transfer_message(transfer))

    async def _read(self, context: Context, work: Awaitable[_T]) -> _T:
        """``await work``; a database failure is UNAVAILABLE (nothing half-written: the
        book writes in one transaction)."""
        try:
            return await work
        except sqlite3.Error as exc:
            _LOG.error("the transfer book failed: %s", exc)
            await abort(
                context,
                grpc.StatusCode.UNAVAILABLE,
                "the property register cannot read or record transfers now; nothing was"
                " recorded, try again later",
            )


class GatewayAgencies:
    """:class:`~adapters.agencies.decision.Agencies` through the local gateway (module
    docstring). ``tax`` and ``cadastre`` are the provider subsystems asked."""

    def __init__(self, client: GatewayClient, *, tax: SubsystemId, cadastre: SubsystemId):
        self._client = client
        self._tax = tax
        self._cadastre = cadastre

    async def tax_debt(self, taxpayer_id: str, inquiry: Inquiry) -> Answer[int]:
        stub = self._for(inquiry).stub(tax_pb2_grpc.TaxStub, self._tax)
        request = tax_pb2.GetTaxDebtRequest(taxpayer_id=taxpayer_id)
        try:
            response, message_id = await _ask("tax agency", stub.GetTaxDebt, request)
        except _NotFoundError as exc:
            raise CheckUnavailableError(
                "tax agency",
                f"NOT_FOUND: the tax agency has no taxpayer {taxpayer_id}",
                message_id=exc.message_id,
            ) from None
        return Answer(response.total_debt.amount_minor, message_id)

    async def parcel_owners(
        self, cadastral_number: str, inquiry: Inquiry
    ) -> Answer[tuple[str, ...] | None]:
        stub = self._cadastre_stub(inquiry)
        request = cadastre_pb2.GetParcelRequest(cadastral_number=cadastral_number)
        try:
            response, message_id = await _ask("cadastre", stub.GetParcel, request)
        except _NotFoundError as exc:
            return Answer(None, exc.message_id)
        return Answer(tuple(o.owner_id for o in response.parcel.owners), message_id)

    async def encumbrances(
        self, cadastral_number: str, inquiry: Inquiry
    ) -> Answer[tuple[EncumbranceInForce, ...] | None]:
        stub = self._cadastre_stub(inquiry)
        request = cadastre_pb2.ListEncumbrancesRequest(cadastral_number=cadastral_number)
        try:
            response, message_id = await _ask("cadastre", stub.ListEncumbrances, request)
        except _NotFoundError as exc:
            return Answer(None, exc.message_id)
        return Answer(
            tuple(
                EncumbranceInForce(
                    encumbrance_id=e.encumbrance_id,
                    type=cadastre_pb2.EncumbranceType.Name(e.type)
                    .removeprefix("ENCUMBRANCE_TYPE_")
                    .lower(),
                    holder_name=e.holder_name,
                    registered_on=e.registered_on,
                )
                for e in response.encumbrances
                if not e.released_on
            ),
            message_id,
        )

    def _for(self, inquiry: Inquiry) -> GatewayClient:
        return self._client.with_user(inquiry.user_id, inquiry.issue)

    def _cadastre_stub(self, inquiry: Inquiry) -> cadastre_pb2_grpc.CadastreAsyncStub:
        return self._for(inquiry).stub(cadastre_pb2_grpc.CadastreStub, self._cadastre)


async def _ask(
    agency: str, method: grpc.aio.UnaryUnaryMultiCallable[Any, _Resp], request: Any
) -> tuple[_Resp, str]:
    """(response, message id) of one query; :class:`_NotFoundError` when the provider
    answered NOT_FOUND; any other failure is :class:`CheckUnavailableError`."""
    message_id = str(uuid.uuid4())
    try:
        response, receipt = await call_with_receipt(method, request, message_id=message_id)
    except ExchangeRefused as exc:
        raise CheckUnavailableError(
            agency,
            f"the bus refused the exchange: {exc.code} ({exc.origin}): {exc.message}",
            message_id=exc.message_id or message_id,
        ) from exc
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.NOT_FOUND:
            raise _NotFoundError(message_id) from exc
        raise CheckUnavailableError(
            agency, f"{exc.code().name}: {exc.details() or 'no details'}", message_id=message_id
        ) from exc
    return response, receipt.message_id or message_id


class _NotFoundError(Exception):
    """The provider answered NOT_FOUND (an answer, not a failure of the bus)."""

    def __init__(self, message_id: str) -> None:
        super().__init__(message_id)
        self.message_id = message_id


async def _check_application(
    context: Context, request: property_pb2.RegisterTransferRequest
) -> None:
    request_id = request.request_id
    if not (
        0 < len(request_id) <= _MAX_REQUEST_ID_CHARS
        and all(c.isascii() and c.isprintable() and not c.isspace() for c in request_id)
    ):
        await invalid_argument(
            context,
            "request_id",
            f"request_id: expected 1 to {_MAX_REQUEST_ID_CHARS} printable ASCII characters"
            f" without spaces (e.g. a UUID), got {_shown(request_id)}",
        )
    problem = cadastral_number_problem("cadastral_number", request.cadastral_number)
    if problem is not None:
        await invalid_argument(context, "cadastral_number", problem)
    for field in ("seller_id", "buyer_id"):
        problem = person_id_problem(field, getattr(request, field))
        if problem is not None:
            await invalid_argument(context, field, problem)


async def _repeated(
    context: Context, earlier: Transfer, application: Application
) -> property_pb2.RegisterTransferResponse:
    if earlier.application != application:
        await invalid_argument(
            context,
            "request_id",
            f"request_id: {application.request_id!a} was already used for a different"
            f" application (transfer {earlier.transfer_id})",
        )
    return property_pb2.RegisterTransferResponse(transfer=_transfer_message(earlier))


def _transfer_message(transfer: Transfer) -> property_pb2.Transfer:
    return property_pb2.Transfer(
        transfer_id=transfer.transfer_id,
        request=_request_message(transfer.application),
        outcome=(
            property_pb2.OUTCOME_REGISTERED if transfer.registered else property_pb2.OUTCOME_REFUSED
        ),
        registration_number=transfer.registration_number,
        refusals=_refusal_messages(transfer.refusals),
        decided_at=_timestamp(transfer.decided_at),
        evidence_message_ids=transfer.evidence,
    )


def _undecided_message(
    application: Application, decision: Decision, decided_at: dt.datetime
) -> property_pb2.Transfer:
    return property_pb2.Transfer(
        transfer_id="",
        request=_request_message(application),
        outcome=property_pb2.OUTCOME_REFUSED,
        refusals=_refusal_messages(decision.refusals),
        decided_at=_timestamp(decided_at),
        evidence_message_ids=decision.evidence,
    )


def _request_message(application: Application) -> property_pb2.RegisterTransferRequest:
    request = property_pb2.RegisterTransferRequest(
        request_id=application.request_id,
        cadastral_number=application.cadastral_number,
        seller_id=application.seller_id,
        buyer_id=application.buyer_id,
    )
    if application.price_minor is not None:
        request.price.CopyFrom(
            property_pb2.Money(amount_minor=application.price_minor, currency=application.currency)
        )
    return request


def _refusal_messages(refusals: Sequence[Refusal]) -> list[property_pb2.Refusal]:
    return [
        property_pb2.Refusal(
            reason=property_pb2.RefusalReason.Value(f"REFUSAL_REASON_{r.reason.value.upper()}"),
            detail=r.detail,
        )
        for r in refusals
    ]


def _timestamp(moment: dt.datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def _is_uuid(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text
    except ValueError:
        return False


def _shown(value: str) -> str:
    return "nothing" if not value else ascii(value[:40])
