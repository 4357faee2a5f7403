"""The demo's scenario: transfer applications sent to the property registration
through the Ministry of Justice's gateway, as a plain gRPC client of its IS port, and
the trace of every exchange each one caused, read back from the three gateways' message
logs with ``serai log show --json``.

This module is the demo's one boundary with the generated ``property.v1`` messages.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from typing import Final

import grpc

from adapters.agencies.scenario import (
    BUYER,
    CLEAN_PARCEL,
    CLEAN_SELLER,
    DEBTOR_PARCEL,
    DEBTOR_SELLER,
    ENCUMBERED_PARCEL,
    ENCUMBERED_SELLER,
    PROPERTY,
    TAX,
)
from serai._demofederation import NOTARY, Federation
from serai._demologs import LogIndex, LogReader
from serai._demoreport import Report
from serai_proto.property.v1 import property_pb2 as property_pb

__all__ = ["CASES", "run_scenario"]

REGISTER_TRANSFER: Final = "/property.v1.PropertyRegistration/RegisterTransfer"
#: The tax method the property registration was not granted.
LIST_ASSESSMENTS: Final = "/tax.v1.Tax/ListAssessments"
_CALL_TIMEOUT_S: Final = 30.0
#: Which adapter serves which subsystem (for the trace).
_ADAPTERS: Final = {
    "UZ/GOV/STC/tax": "tax adapter",
    "UZ/GOV/CADASTRE/registry": "cadastre adapter",
    "UZ/GOV/MINJUST/property": "property adapter",
}


@dataclass(frozen=True)
class TransferCase:
    """One application and the decision it must get."""

    title: str
    parcel: str
    seller: str
    registered: bool
    reason: str  # the RefusalReason name expected; "" when registered


CASES: Final = (
    TransferCase(
        "a transfer that is registered (CLEAN_PARCEL from CLEAN_SELLER to BUYER)",
        CLEAN_PARCEL, CLEAN_SELLER, registered=True, reason="",
    ),
    TransferCase(
        "refused: the seller owes tax (DEBTOR_PARCEL from DEBTOR_SELLER)",
        DEBTOR_PARCEL, DEBTOR_SELLER, registered=False,
        reason="REFUSAL_REASON_SELLER_HAS_TAX_DEBT",
    ),
    TransferCase(
        "refused: the parcel is encumbered (ENCUMBERED_PARCEL from ENCUMBERED_SELLER)",
        ENCUMBERED_PARCEL, ENCUMBERED_SELLER, registered=False,
        reason="REFUSAL_REASON_PARCEL_ENCUMBERED",
    ),
)  # fmt: skip


@dataclass(frozen=True)
class _Answer:
    code: grpc.StatusCode
    body: bytes | None
    metadata: dict[str, str]


@dataclass(frozen=True)
class _Sent:
    """One call of the scenario, its answer, and when it was under way."""

    message_id: str
    answer: _Answer
    began: dt.datetime
    ended: dt.datetime

    def records(self, logged: list[LogIndex]) -> list[LogIndex]:
        """The records the gateways appended while the call was under way."""
        return [
            r
            for r in logged
            if self.began <= dt.datetime.fromisoformat(r.appended_at) <= self.ended
        ]


def run_scenario(federation: Federation, reader: LogReader, report: Report) -> LogIndex | None:
    """The three transfer applications and the two refusals, each with its trace from
    the logs; returns the provider-side record of the first application.

    The calls are made first and the three logs read once after them (one ``serai log
    show`` per gateway, not one per step); each step's records are those appended while
    its call was under way, so the trace is the same as if read step by step."""
    gateways = federation.gateways
    minjust = gateways["minjust"]
    reader.read_new()  # the access-rights grants: not part of any step
    transfers = [
        _send(
            minjust.is_port,
            REGISTER_TRANSFER,
            _application(number, case),
            client=NOTARY,
            service=str(PROPERTY),
            message_id=f"demo-transfer-{number}-{os.urandom(4).hex()}",
        )
        for number, case in enumerate(CASES, start=1)
    ]
    denied = _send(
        minjust.is_port,
        LIST_ASSESSMENTS,
        b"",
        client=str(PROPERTY),
        service=str(TAX),
        message_id=f"demo-denied-{os.urandom(4).hex()}",
    )
    replayed = _send(
        minjust.is_port,
        REGISTER_TRANSFER,
        b"",
        client=NOTARY,
        service=str(PROPERTY),
        message_id=transfers[0].message_id,
    )
    logged = reader.read_new()

    legend = ", ".join(
        f"{_short(g.agency.gateway_id)} = {g.agency.gateway_id}" for g in gateways.values()
    )
    print(
        f"\nIn the traces below, {legend}; #N is the index of a record in that gateway's "
        "message log (serai log show --json), and each exchange is one x-road-id.",
        flush=True,
    )
    for number, (case, sent) in enumerate(zip(CASES, transfers, strict=True), start=1):
        report.section(f"Transfer {number}: {case.title}")
        report.note(
            f"the notary office's IS ({NOTARY}) calls {REGISTER_TRANSFER} on the "
            f"{minjust.agency.gateway_id} IS port {minjust.is_port}, "
            f"x-road-id {sent.message_id}"
        )
        records = sent.records(logged)
        evidence = _check_decision(case, sent.answer, report)
        _trace(sent.message_id, "notary IS", records, report)
        _check_evidence(sent.message_id, evidence, records, report)

    report.section("Refused by the gateways: a method not granted, a replayed message id")
    report.note(
        f"the property registration's IS ({PROPERTY}) calls {LIST_ASSESSMENTS} of {TAX}: "
        "only GetTaxDebt was granted"
    )
    refusal = _refusal(denied.answer)
    report.check(
        denied.answer.code is grpc.StatusCode.PERMISSION_DENIED
        and refusal == "client:access_denied",
        f"{denied.answer.code.name}, x-road-error {refusal}",
    )
    records = denied.records(logged)
    _trace(denied.message_id, "property IS (this demo)", records, report)
    at_tax = [r for r in records if r.gateway == gateways["stc"].agency.gateway_id]
    report.check(
        not at_tax,
        f"{gateways['stc'].agency.gateway_id} refused it before logging it or calling the "
        "tax adapter" + ("" if not at_tax else f" (but it logged {[r.index for r in at_tax]})"),
    )
    report.note(
        f"the notary office's IS sends a request with x-road-id {replayed.message_id} again"
    )
    refusal = _refusal(replayed.answer)
    received = [r for r in replayed.records(logged) if r.kind == "request_received"]
    report.check(
        replayed.answer.code is grpc.StatusCode.ALREADY_EXISTS
        and refusal.endswith(":replay_detected")
        and not received,
        f"{replayed.answer.code.name}, x-road-error {refusal}: the provider side refused it "
        "before logging it; the property adapter never saw it",
    )
    return next(
        (
            r
            for r in transfers[0].records(logged)
            if r.message_id == transfers[0].message_id and r.kind == "request_received"
        ),
        None,
    )


def _application(number: int, case: TransferCase) -> bytes:
    """The serialized RegisterTransferRequest of one case."""
    return property_pb.RegisterTransferRequest(
        request_id=f"notary-0142-2026-{number:04d}",
        cadastral_number=case.parcel,
        seller_id=case.seller,
        buyer_id=BUYER,
        price=property_pb.Money(amount_minor=85_000_000_000 + number, currency="UZS"),
    ).SerializeToString()


def _refusal(answer: _Answer) -> str:
    """``origin:code`` of the answer's ``x-road-error`` (``origin:code: message``)."""
    return ":".join(answer.metadata.get("x-road-error", "none").split(":")[:2])


def _check_decision(case: TransferCase, answer: _Answer, report: Report) -> list[str]:
    """Check the decision; returns the evidence message ids it names."""
    if answer.code is not grpc.StatusCode.OK or answer.body is None:
        error = answer.metadata.get("x-road-error", "no x-road-error")
        report.check(False, f"RegisterTransfer failed: {answer.code.name} ({error})")
        return []
    transfer = property_pb.RegisterTransferResponse.FromString(answer.body).transfer
    outcome = property_pb.Outcome.Name(transfer.outcome)
    reasons = [property_pb.RefusalReason.Name(r.reason) for r in transfer.refusals]
    details = "; ".join(
        f"{property_pb.RefusalReason.Name(r.reason).removeprefix('REFUSAL_REASON_')}: {r.detail}"
        for r in transfer.refusals
    )
    if case.registered:
        ok = outcome == "OUTCOME_REGISTERED" and bool(transfer.registration_number)
        text = f"{outcome}, registration number {transfer.registration_number or '-'}"
    else:
        ok = outcome == "OUTCOME_REFUSED" and reasons == [case.reason]
        text = f"{outcome}: {details or 'no reason given'}"
    report.check(ok, f"decision {transfer.transfer_id}: {text}")
    report.note(
        f"x-road-request-hash {answer.metadata.get('x-road-request-hash', '-')[:16]}...: the "
        "response's signature was verified and bound to the signed request"
    )
    return list(transfer.evidence_message_ids)


def _trace(first: str, caller: str, records: list[LogIndex], report: Report) -> None:
    """Print every exchange in ``records``: who called what, and each hop's log record.
    ``caller`` made the call ``first``; the property adapter made the others."""
    by_id: dict[str, list[LogIndex]] = {}
    for record in sorted(records, key=lambda r: dt.datetime.fromisoformat(r.appended_at)):
        by_id.setdefault(record.message_id, []).append(record)
    ordered = sorted(by_id, key=lambda m: m != first)  # stable: first appended first
    for message_id in ordered:
        rows = by_id[message_id]
        kinds = {r.kind: r for r in rows}
        request = kinds.get("request_sent") or kinds.get("request_received")
        if request is None:
            continue
        source = caller if message_id == first else "property adapter"
        callee = _ADAPTERS.get(request.service, request.service)
        method = request.method.rsplit("/", 1)[-1]
        report.line(f"{method}  x-road-id {message_id}  {request.client} -> {request.service}")
        there = [source]
        back = []
        for kind in ("request_sent", "request_received"):
            if kind in kinds:
                there.append(f"{_short(kinds[kind].gateway)} #{kinds[kind].index} {kind}")
        if "request_received" in kinds:
            there.append(callee)
            back.append(callee)
        for kind in ("response_sent", "response_received"):
            if kind in kinds:
                outcome = kinds[kind].outcome
                back.append(
                    f"{_short(kinds[kind].gateway)} #{kinds[kind].index} {kind}"
                    + ("" if outcome == "ok" else f" ({outcome})")
                )
        if "response_received" in kinds or "response_sent" in kinds:
            back.append(source)
        report.line("  " + " -> ".join(there))
        if back:
            report.line("  " + " -> ".join(back))
        else:
            report.line("  (no response record: refused)")


def _short(gateway: str) -> str:
    """``UZ/GOV/MINJUST/gw:main`` as ``MINJUST gw`` (the legend is printed once)."""
    return f"{gateway.split('/')[2]} gw"


def _check_evidence(
    message_id: str, evidence: list[str], records: list[LogIndex], report: Report
) -> None:
    """The application and every query the decision relied on are in both logs."""
    complete = {"request_sent", "request_received", "response_sent", "response_received"}
    kinds: dict[str, set[str]] = {}
    for record in records:
        kinds.setdefault(record.message_id, set()).add(record.kind)
    queries = [m for m in kinds if m != message_id]
    services = list(
        dict.fromkeys(r.method for r in records if r.message_id != message_id and r.method)
    )
    missing = [m for m in [message_id, *evidence] if kinds.get(m) != complete]
    report.check(
        not missing and bool(evidence) and set(evidence) <= set(queries),
        f"the application and the {len(evidence)} queries its decision cites "
        f"({', '.join(s.rsplit('/', 1)[-1] for s in services) or 'none'}) are each logged "
        "four times: request and response, by the consumer's and the provider's gateway"
        + (f"; incomplete: {', '.join(missing)}" if missing else ""),
    )


def _send(
    address: str, method: str, body: bytes, *, client: str, service: str, message_id: str
) -> _Sent:
    """:func:`_call`, with the times it began and ended."""
    began = dt.datetime.now(dt.UTC)
    answer = _call(address, method, body, client=client, service=service, message_id=message_id)
    return _Sent(message_id, answer, began=began, ended=dt.datetime.now(dt.UTC))


def _call(
    address: str, method: str, body: bytes, *, client: str, service: str, message_id: str
) -> _Answer:
    """One unary call to a gateway's IS port, as a plain gRPC client."""
    metadata = (
        ("x-road-client", client),
        ("x-road-service", service),
        ("x-road-id", message_id),
        ("x-road-user-id", "UZ:notary-0142"),
        ("x-road-issue", "UZ-2026-000001"),
    )
    with grpc.insecure_channel(address) as channel:
        stub = channel.unary_unary(method, None, None)
        try:
            body, state = stub.with_call(body, metadata=metadata, timeout=_CALL_TIMEOUT_S)
        except grpc.RpcError as exc:
            failed: grpc.Call = exc  # type: ignore[assignment]  # a RpcError is also a Call
            found = _text(failed.initial_metadata(), failed.trailing_metadata())
            return _Answer(failed.code(), None, found)
        return _Answer(
            grpc.StatusCode.OK, body, _text(state.initial_metadata(), state.trailing_metadata())
        )


def _text(*groups: object) -> dict[str, str]:
    found: dict[str, str] = {}
    for group in groups:
        for key, value in group or ():  # type: ignore[attr-defined]  # a metadata sequence
            if isinstance(value, str):
                found[key] = value
    return found
