"""Outages of the parts around the gateways (DESIGN §9, reliability), with real processes.

The federation of ``serai bench``, brought up on loopback with ``serai`` commands by
:func:`serai._benchfed.bring_up`: a development PKI with its OCSP responder and TSA, the
registry, the echo provider IS (``tools/echo_provider.py``) on a port of its own
choosing, a consumer gateway (``UZ/GOV/MINJUST/gw:main``, client ``property``) and a
provider gateway (``UZ/GOV/CADASTRE/gw:main``, provider ``registry``). A plain grpcio
client plays the consumer IS. Some settings are shortened so outages play out in test
time, each the operator's own knob (set through ``bring_up``'s hooks and options before
the process that reads it starts):

* ``registry.toml``: ``configuration_validity_s`` (how long a published configuration is
  valid) and ``regeneration_interval_s`` (how often the registry re-signs it);
* ``gateway.toml``: ``globalconf_refresh_interval_s`` (how often a gateway fetches it)
  and ``default_timeout_s`` (the deadline of an exchange whose caller sets a longer one);
* ``serai pki ocsp serve --next-update-s`` (the nextUpdate of each OCSP answer, the bound
  of a cached answer).

Each case stops one part, checks the exact code the consumer IS gets (the gRPC status
and the ``x-road-error`` trailer, ``origin:code:message``), that every call ends within
its deadline (every call carries one; the margin is generous), that the gateway which
refused counted it in its ``/metrics``, then brings the part back and checks that
exchanges succeed again WITHOUT restarting any gateway (their pids never change).
Nothing asserts speed but the slow long-outage case: served again within 30 s of the
IS's return (the gateway caps its reconnection back-off at 5 s; gRPC's default grows
to 120 s).

Two defects these cases found, fixed beside them: with the OCSP responder down, the
consumer IS got ``client:ocsp_stale`` (UNAUTHENTICATED, blaming the client for an
outage) from the provider gateway; now the gateway whose own answer is past its bound
refuses with ``gateway:ocsp_unavailable`` (UNAVAILABLE) before anything is sent
(:class:`gateway.runtime.StapledOCSP`). And a provider IS back after minutes away was
refused for up to two more minutes (:class:`gateway.peers.ChannelPool`).

The OCSP case goes through staleness only in the slow run: it waits for the stapled
answers' nextUpdate (180 s here) to pass. The gateway renews the answer it staples on a
schedule that follows the answer's remaining life and, after failures, retries within
seconds (:class:`gateway.runtime.StapledOCSP`, tests/test_gateway_stapled_ocsp.py).
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import grpc
import pytest

from serai import _benchfed
from serai._benchfed import ECHO_PROVIDER, Setup
from serai._demoprocs import SERAI, Service, must, run_serai
from serai.errors import ERROR_METADATA_KEY
from tests.opscheck import sample, scrape

pytestmark = pytest.mark.timeout(900)

CONSUMER: Final = "UZ/GOV/MINJUST/property"
PROVIDER: Final = "UZ/GOV/CADASTRE/registry"
GET_PARCEL: Final = "/cadastre.v1.Cadastre/GetParcel"
SLOW: Final = "/echo.v1.Echo/Slow"
REACHED: Final = "/echo.v1.Echo/Reached"

#: Shortened settings (module docstring).
CONF_VALIDITY_S: Final = 15
CONF_REGENERATION_S: Final = 2
GLOBALCONF_REFRESH_S: Final = 1
#: The gateways' own deadline for an exchange (a caller's longer deadline is cut to it).
GATEWAY_TIMEOUT_S: Final = 4
#: The OCSP answers' life: the OCSP outage lasts this long before the gateways refuse.
OCSP_NEXT_UPDATE_S: Final = 180
#: The deadline of every call of the consumer IS, unless a case sets its own.
CALL_DEADLINE_S: Final = 30.0
#: Slack on top of a deadline before a call counts as hanging (a loaded 2-core machine).
MARGIN_S: Final = 15.0
#: How long a part's return may take to show (a refresh, a reconnection back-off).
RECOVER_S: Final = 240.0
#: How long the provider IS stays down in the long outage (gRPC's back-off reaches ~100 s).
PROVIDER_OUTAGE_S: Final = 200
#: Served again within this after the IS is back (the gateway's back-off cap is 5 s).
RECONNECT_BOUND_S: Final = 30.0
#: How long the provider IS hangs in the long hanging case (gRPC gives a connection 20 s).
HANGING_S: Final = 60


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the consumer IS saw: status, body, ``x-road-error`` and how long it took."""

    status: grpc.StatusCode
    body: bytes | None
    error: str | None  # the x-road-error trailer, origin:code:message
    elapsed_s: float

    @property
    def code(self) -> str | None:
        return None if self.error is None else self.error.split(":", 2)[1]

    @property
    def origin(self) -> str | None:
        return None if self.error is None else self.error.split(":", 2)[0]


def call(
    address: str,
    method: str = GET_PARCEL,
    body: bytes | None = None,
    *,
    deadline_s: float = CALL_DEADLINE_S,
    metadata: tuple[tuple[str, str], ...] = (),
) -> Outcome:
    """One call of the consumer IS with a deadline; asserts it ended within the deadline
    (plus the margin): an outage never hangs the caller."""
    sent = os.urandom(64) if body is None else body
    started = time.monotonic()
    with grpc.insecure_channel(address) as channel:
        stub = channel.unary_unary(method, None, None)
        try:
            answer, state = stub.with_call(
                sent,
                metadata=(("x-road-client", CONSUMER), ("x-road-service", PROVIDER), *metadata),
                timeout=deadline_s,
            )
        except grpc.RpcError as exc:
            failed: grpc.Call = exc  # type: ignore[assignment]  # a RpcError is also a Call
            outcome = Outcome(
                failed.code(),
                None,
                _error_of(failed.trailing_metadata()),
                time.monotonic() - started,
            )
        else:
            outcome = Outcome(
                grpc.StatusCode.OK,
                answer,
                _error_of(state.trailing_metadata()),
                time.monotonic() - started,
            )
    assert outcome.elapsed_s <= deadline_s + MARGIN_S, f"a call hung: {outcome}"
    if outcome.status is grpc.StatusCode.OK:
        assert outcome.body == sent, "the echo provider returns the body"
    return outcome


def _error_of(trailers: object) -> str | None:
    for key, value in trailers or ():  # type: ignore[attr-defined]  # a metadata sequence
        if key == ERROR_METADATA_KEY and isinstance(value, str):
            return value
    return None


def reached(echo_address: str) -> int:
    """How many calls reached the echo provider (its own count, asked directly)."""
    with grpc.insecure_channel(echo_address) as channel:
        answer = channel.unary_unary(REACHED, None, None)(b"", timeout=CALL_DEADLINE_S)
    return int(answer)


@dataclass
class Federation:
    """The running processes, and how to stop and restart the parts that go down."""

    workdir: Path
    services: list[Service]
    pki: Path
    registry_config: Path
    ocsp_listen: str
    echo_listen: str
    consumer_is: str
    gateways: dict[str, Service] = field(default_factory=dict)
    metrics: dict[str, str] = field(default_factory=dict)  # gateway role -> ops address
    parts: dict[str, Service] = field(default_factory=dict)
    _starts: dict[str, int] = field(default_factory=dict)

    def start(self, name: str, argv: list[str], stopped_event: str) -> Service:
        count = self._starts.get(name, 0) + 1
        self._starts[name] = count
        log = self.workdir / "logs" / f"{name}-{count}.log"
        service = Service.start(name, argv, log=log, stopped_event=stopped_event)
        self.services.append(service)
        self.parts[name] = service
        return service

    def stop(self, name: str) -> None:
        """Stop a part with SIGTERM, as an operator (or a crash, for what peers see)."""
        service = self.parts[name]
        service.terminate()
        service.wait_stopped()
        assert not service.running()

    def start_echo(self) -> None:
        echo = self.start(
            "echo",
            [sys.executable, str(ECHO_PROVIDER), "--listen", self.echo_listen],
            "echo_stopped",
        )
        echo.wait_for("echo_listening")

    def start_registry(self) -> None:
        registry = self.start(
            "registry",
            [*SERAI, "registry", "serve", "--config", str(self.registry_config)],
            "registry_stopped",
        )
        registry.wait_for("registry_listening")

    def start_ocsp(self) -> None:
        ocsp = self.start(
            "ocsp",
            [
                *SERAI, "pki", "ocsp", "serve", "--dir", str(self.pki),
                "--listen", self.ocsp_listen, "--next-update-s", str(OCSP_NEXT_UPDATE_S),
            ],
            "ocsp_stopped",
        )  # fmt: skip
        ocsp.wait_for("ocsp_listening")

    def refusals(self, role: str, code: str) -> float:
        """How many exchanges the ``role`` gateway refused with ``code`` (its /metrics)."""
        text = scrape(self.metrics[role])
        side = "consumer" if role == "consumer" else "provider"
        found = sample(text, "serai_gateway_refusals_total", side=side, code=code)
        return 0.0 if found is None else found

    def gateway_pids(self) -> dict[str, int]:
        """The gateways' pids; both must still run (nothing restarted them)."""
        for name, gateway in self.gateways.items():
            assert gateway.running(), f"gateway {name} exited: {gateway.log}"
        return {name: gateway.pid for name, gateway in self.gateways.items()}


def _set(path: Path, key: str, value: int) -> None:
    """Set ``key = value`` in a TOML file written by an ``init`` command (the line must be
    there exactly once: the test fails loudly if ``init`` stops writing it)."""
    text = path.read_text()
    new, count = re.subn(rf"(?m)^{re.escape(key)} = .*$", f"{key} = {value}", text)
    assert count == 1, f"{path}: {key} appears {count} times"
    path.write_text(new)


def bring_up(workdir: Path, services: list[Service]) -> Federation:
    """Everything under ``workdir`` with the shortened settings, by
    :func:`serai._benchfed.bring_up` and its hooks; each process is appended to
    ``services`` as it starts."""

    def edit_registry(config: Path) -> None:
        _set(config, "configuration_validity_s", CONF_VALIDITY_S)
        _set(config, "regeneration_interval_s", CONF_REGENERATION_S)

    def prepare(setup: Setup) -> None:
        for config in setup.gateway_configs.values():
            _set(config, "globalconf_refresh_interval_s", GLOBALCONF_REFRESH_S)
            _set(config, "default_timeout_s", GATEWAY_TIMEOUT_S)

    up = _benchfed.bring_up(
        workdir,
        services,
        ocsp_next_update_s=OCSP_NEXT_UPDATE_S,
        edit_registry=edit_registry,
        prepare=prepare,
    )
    started = {service.name: service for service in services}
    fed = Federation(
        workdir=workdir,
        services=services,
        pki=up.setup.pki,
        registry_config=up.setup.registry_config,
        ocsp_listen=up.setup.ocsp_listen,
        echo_listen=up.direct,  # a restarted echo provider listens there again
        consumer_is=up.gateways,
        gateways={role: started[f"gateway-{role}"] for role in ("consumer", "provider")},
        metrics={role: str(listening["metrics"]) for role, listening in up.listening.items()},
        parts=started,
        _starts=dict.fromkeys(started, 1),
    )
    acl = ("--gateway", str(up.listening["provider"]["admin"]), "--token-file", str(up.admin_token))
    must(run_serai("acl", "grant", PROVIDER, GET_PARCEL, CONSUMER, *acl))
    must(run_serai("acl", "grant", PROVIDER, "echo.v1.Echo", CONSUMER, *acl))
    return fed


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    services: list[Service] = []
    try:
        federation = bring_up(tmp_path_factory.mktemp("outages"), services)
        succeeds_eventually(federation)  # channels, handshakes and first OCSP answers
        yield federation
    finally:
        for service in services:
            service.terminate()
        for service in services:
            service.wait_stopped()  # SIGKILL after a while


def succeeds_eventually(
    fed: Federation, *, what: str = "the federation", codes: frozenset[str] | None = None
) -> tuple[int, float]:
    """Calls until one succeeds; (failed calls before it, seconds). Every call ends within
    its deadline; with ``codes``, every failure on the way carries one of them."""
    failed = 0
    started = time.monotonic()
    while True:
        outcome = call(fed.consumer_is)
        if outcome.status is grpc.StatusCode.OK:
            return failed, time.monotonic() - started
        assert codes is None or outcome.code in codes, f"{what}: {outcome}"
        failed += 1
        assert time.monotonic() - started < RECOVER_S, f"{what} did not recover: {outcome}"
        time.sleep(0.5)


def served_until_refused(
    fed: Federation, *, within_s: float, pause_s: float, what: str
) -> tuple[int, Outcome, float]:
    """Calls, ``pause_s`` apart, until one is not served; (calls served before it, its
    outcome, seconds from the first call to its end). Every call ends within its
    deadline; still served after ``within_s``: fails with ``what``."""
    started = time.monotonic()
    served = 0
    while True:
        outcome = call(fed.consumer_is)
        if outcome.status is not grpc.StatusCode.OK:
            return served, outcome, time.monotonic() - started
        served += 1
        assert time.monotonic() - started < within_s, what
        time.sleep(pause_s)


def assert_serving(fed: Federation, times: int = 3) -> None:
    for _ in range(times):
        outcome = call(fed.consumer_is)
        assert (outcome.status, outcome.error) == (grpc.StatusCode.OK, None), outcome


def assert_refused(outcome: Outcome, status: grpc.StatusCode, code: str) -> None:
    assert (outcome.status, outcome.code) == (status, code), outcome


@contextlib.contextmanager
def silent_listener(address: str) -> Iterator[socket.socket]:
    """A TCP listener at ``address`` that completes handshakes (the kernel's backlog) and
    never reads nor answers: a hanging IS."""
    host, port = address.rsplit(":", 1)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, int(port)))
        listener.listen(64)
        yield listener
    finally:
        listener.close()


def test_provider_is_down_gives_provider_unavailable_then_recovers(fed: Federation) -> None:
    pids = fed.gateway_pids()
    assert_serving(fed)

    counted = fed.refusals("provider", "provider_unavailable")
    fed.stop("echo")
    for _ in range(5):
        outcome = call(fed.consumer_is)
        assert_refused(outcome, grpc.StatusCode.UNAVAILABLE, "provider_unavailable")
        assert outcome.origin == "provider"
    assert fed.refusals("provider", "provider_unavailable") >= counted + 5

    fed.start_echo()  # a new provider process on the same port
    failed, seconds = succeeds_eventually(
        fed, what="a restarted provider IS", codes=frozenset({"provider_unavailable"})
    )
    print(f"provider IS back: served after {failed} refused calls, {seconds:.1f} s")
    assert_serving(fed)
    assert reached(fed.echo_listen) >= 4, "the new provider process got the exchanges"
    assert fed.gateway_pids() == pids


@pytest.mark.slow
def test_provider_is_down_for_minutes_is_served_again_soon_after_its_return(
    fed: Federation,
) -> None:
    """gRPC's reconnection back-off towards an unreachable IS grows to 120 s, and every
    call fails at once meanwhile; the gateway caps it, so an IS back after minutes away
    is served again within seconds (measured: 101 s without the cap, 4 s with it, after
    200 s away)."""
    pids = fed.gateway_pids()
    assert_serving(fed)
    fed.stop("echo")
    stopped = time.monotonic()
    while time.monotonic() - stopped < PROVIDER_OUTAGE_S:
        outcome = call(fed.consumer_is)
        assert_refused(outcome, grpc.StatusCode.UNAVAILABLE, "provider_unavailable")
        time.sleep(2.0)
    fed.start_echo()
    failed, seconds = succeeds_eventually(
        fed, what="a provider IS back after minutes", codes=frozenset({"provider_unavailable"})
    )
    print(f"provider IS back after {PROVIDER_OUTAGE_S} s: {failed} refused calls, {seconds:.1f} s")
    assert seconds < RECONNECT_BOUND_S, "the IS waited out a long reconnection back-off"
    assert_serving(fed)
    assert fed.gateway_pids() == pids


def test_slow_provider_is_cut_at_the_deadline(fed: Federation) -> None:
    pids = fed.gateway_pids()
    assert_serving(fed)
    # The echo provider sleeps 5 s on /Slow (metadata other than x-road-* stays in the
    # consumer gateway, so its default applies). The caller's own deadline of 2 s reaches
    # the provider gateway, which gives up on the IS and says so.
    outcome = call(fed.consumer_is, SLOW, deadline_s=2.0)
    assert outcome.status is grpc.StatusCode.DEADLINE_EXCEEDED, outcome
    assert outcome.code in {None, "deadline_exceeded"}, outcome  # None: the caller's own timer
    # A caller with a longer deadline (30 s) is cut at the gateways' default_timeout_s (4 s):
    # no IS can hold an exchange longer than the gateway allows.
    counted = fed.refusals("provider", "deadline_exceeded")
    outcome = call(fed.consumer_is, SLOW, deadline_s=CALL_DEADLINE_S)
    assert_refused(outcome, grpc.StatusCode.DEADLINE_EXCEEDED, "deadline_exceeded")
    assert outcome.elapsed_s < CALL_DEADLINE_S, "the gateway's deadline, not the caller's"
    if outcome.origin == "provider":  # else the consumer gateway's timer struck first
        assert fed.refusals("provider", "deadline_exceeded") >= counted + 1
    assert_serving(fed)
    assert fed.gateway_pids() == pids


def test_hanging_provider_is_gives_a_code_within_the_deadline(fed: Federation) -> None:
    pids = fed.gateway_pids()
    assert_serving(fed)
    fed.stop("echo")
    with silent_listener(fed.echo_listen):
        outcomes = [call(fed.consumer_is) for _ in range(2)]
    for outcome in outcomes:
        # Accepted TCP, never an HTTP/2 answer: the exchange's deadline (the gateways'
        # 4 s, well inside the caller's 30 s) ends it, or, once gRPC gives up the
        # connection attempt, the IS is unreachable. Never a hang, never a bare status.
        assert (outcome.status, outcome.code) in {
            (grpc.StatusCode.DEADLINE_EXCEEDED, "deadline_exceeded"),
            (grpc.StatusCode.UNAVAILABLE, "provider_unavailable"),
        }, outcome
        assert outcome.elapsed_s < CALL_DEADLINE_S, "the gateway's deadline, not the caller's"
    assert outcomes[0].code == "deadline_exceeded", outcomes[0]  # the IS took the connection

    fed.start_echo()
    failed, seconds = succeeds_eventually(
        fed,
        what="the provider IS after a hang",
        codes=frozenset({"provider_unavailable", "deadline_exceeded"}),
    )
    print(f"provider IS back after a hang: served after {failed} refused calls, {seconds:.1f} s")
    assert_serving(fed)
    assert fed.gateway_pids() == pids


@pytest.mark.slow
def test_provider_is_hanging_for_a_minute_never_holds_a_caller(fed: Federation) -> None:
    """Past gRPC's connection timeout (20 s) the gateway gives up the silent connection
    (``provider_unavailable``) and tries again (a new silent connection: the deadline
    again): for a minute, every call gets one of the two codes within its deadline."""
    pids = fed.gateway_pids()
    assert_serving(fed)
    fed.stop("echo")
    codes: dict[str | None, int] = {}
    with silent_listener(fed.echo_listen):
        started = time.monotonic()
        while time.monotonic() - started < HANGING_S:
            outcome = call(fed.consumer_is)
            assert (outcome.status, outcome.code) in {
                (grpc.StatusCode.DEADLINE_EXCEEDED, "deadline_exceeded"),
                (grpc.StatusCode.UNAVAILABLE, "provider_unavailable"),
            }, outcome
            assert outcome.elapsed_s < CALL_DEADLINE_S, "the gateway's deadline, not the caller's"
            codes[outcome.code] = codes.get(outcome.code, 0) + 1
            time.sleep(0.5)
    print(f"provider IS hanging for {HANGING_S} s: {codes}")
    assert codes.get("deadline_exceeded", 0) >= 1
    assert codes.get("provider_unavailable", 0) >= 1, "the silent connection was never given up"
    fed.start_echo()
    succeeds_eventually(
        fed,
        what="the provider IS after a long hang",
        codes=frozenset({"provider_unavailable", "deadline_exceeded"}),
    )
    assert_serving(fed)
    assert fed.gateway_pids() == pids


def test_registry_down_serves_until_expiry_then_globalconf_expired_then_recovers(
    fed: Federation,
) -> None:
    pids = fed.gateway_pids()
    assert_serving(fed)

    fed.stop("registry")
    try:
        # The gateways serve from their copy until its expires_at.
        served, outcome, expired_after = served_until_refused(
            fed, within_s=CONF_VALIDITY_S + RECOVER_S, pause_s=0.5, what="never expired"
        )
        assert served >= 1, "the cached configuration was not served at all"
        assert_refused(outcome, grpc.StatusCode.UNAVAILABLE, "globalconf_expired")
        assert outcome.origin == "gateway"

        # Either gateway may hold the older copy (each refreshed on its own schedule, up
        # to a regeneration interval apart), so the refusal is counted by whichever
        # refused: the consumer itself, or the provider (the consumer passes it on).
        def expired_refusals() -> float:
            return fed.refusals("consumer", "globalconf_expired") + fed.refusals(
                "provider", "globalconf_expired"
            )

        counted = expired_refusals()
        for _ in range(3):  # fail closed, and stay closed while the registry is away
            assert_refused(call(fed.consumer_is), grpc.StatusCode.UNAVAILABLE, "globalconf_expired")
        assert expired_refusals() >= counted + 3
        print(f"registry down: served {served} calls, expired after {expired_after:.1f} s")
    finally:
        fed.start_registry()  # same configuration, same ports (also when a check failed)
    failed, seconds = succeeds_eventually(
        fed,
        what="the gateways after the registry's return",
        codes=frozenset({"globalconf_expired"}),
    )
    print(f"registry back: served after {failed} refused calls, {seconds:.1f} s")
    assert_serving(fed)
    assert fed.gateway_pids() == pids


def test_ocsp_responder_down_exchanges_continue_on_the_cached_answer(fed: Federation) -> None:
    """The short version: no exchange waits for the responder; each gateway staples the
    answer it holds (the slow test below plays the outage to its end)."""
    pids = fed.gateway_pids()
    assert_serving(fed)
    fed.stop("ocsp")
    try:
        for _ in range(5):
            outcome = call(fed.consumer_is)
            assert (outcome.status, outcome.error) == (grpc.StatusCode.OK, None), outcome
            time.sleep(0.5)
    finally:
        fed.start_ocsp()
    assert_serving(fed)
    assert fed.gateway_pids() == pids


@pytest.mark.slow
def test_ocsp_responder_down_until_the_answers_expire_then_refused_then_recovers(
    fed: Federation,
) -> None:
    pids = fed.gateway_pids()
    assert_serving(fed)
    fed.stop("ocsp")
    # Served while the stapled answers are within their nextUpdate.
    served, outcome, stale_after = served_until_refused(
        fed, within_s=OCSP_NEXT_UPDATE_S + RECOVER_S, pause_s=1.0, what="never refused"
    )
    assert served >= 1, "the cached OCSP answer was not used at all"
    # A gateway whose own answer is past its bound says so itself, as an outage
    # (UNAVAILABLE, retry later), rather than sending a signature its peer refuses. Only
    # an exchange in flight at the very moment the answer expires (a few milliseconds
    # between signing and the peer's check) can meet the peer's ocsp_stale instead.
    assert (outcome.status, outcome.code, outcome.origin) in {
        (grpc.StatusCode.UNAVAILABLE, "ocsp_unavailable", "gateway"),
        (grpc.StatusCode.UNAUTHENTICATED, "ocsp_stale", "client"),
        (grpc.StatusCode.UNAUTHENTICATED, "ocsp_stale", "provider"),
    }, outcome

    def counted() -> float:  # by the gateway whose answer expired first
        return sum(fed.refusals(role, "ocsp_unavailable") for role in fed.gateways)

    before = counted()
    for _ in range(3):
        assert_refused(call(fed.consumer_is), grpc.StatusCode.UNAVAILABLE, "ocsp_unavailable")
    assert counted() >= before + 3
    print(f"OCSP responder down: served {served} calls, refused after {stale_after:.1f} s")

    fed.start_ocsp()
    failed, seconds = succeeds_eventually(
        fed,
        what="the gateways after the responder's return",
        codes=frozenset({"ocsp_unavailable"}),
    )
    print(f"OCSP responder back: served after {failed} refused calls, {seconds:.1f} s")
    assert_serving(fed)
    assert fed.gateway_pids() == pids
