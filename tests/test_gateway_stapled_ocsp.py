"""gateway.runtime.StapledOCSP: when the stapled answer for the gateway's signing
certificate is renewed (one test per rule of the class docstring), that the renewal
loop keeps a short-lived answer stapled and staples again soon after the responder's
return, and that an answer past its bound is withheld so signing fails with
``ocsp_unavailable`` (the unit under the OCSP outage of test_reliability_outages). The
answers come from the real responder core (certs.ocsp) through the real client
(certs.ocsp_client); only the transport between them can be switched off, and the
responder's clock set behind."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509

from certs.errors import OCSPError
from certs.keys import PrivateKey, generate_private_key
from certs.ocsp import OCSPResponder
from certs.ocsp_client import OCSPClient, ResponderTransport
from certs.pkidir import PKIDirectory
from certs.profiles import Profile
from gateway.errors import SigningError
from gateway.headers import request_header_for
from gateway.runtime import StapledOCSP
from gateway.signing import HeaderSigner
from serai.errors import ErrorCode
from serai.identifiers import ServiceId, SubsystemId


class SwitchableTransport(ResponderTransport):
    """The in-memory transport, with an off switch (the responder is away)."""

    up = True

    async def post(self, url: str, der_request: bytes, *, timeout_s: float) -> bytes:
        if not self.up:
            raise OCSPError("the responder is away", code=ErrorCode.OCSP_UNAVAILABLE)
        return await super().post(url, der_request, timeout_s=timeout_s)


@dataclass
class Setup:
    stapled: StapledOCSP
    transport: SwitchableTransport
    certificate: x509.Certificate
    issuer: x509.Certificate
    key: PrivateKey
    #: How old the responder's answers are when made (its clock runs this far behind).
    lag: list[dt.timedelta]


@contextlib.asynccontextmanager
async def _stapled(
    tmp_path: Path, *, next_update_s: int, max_age_s: float = 3600, lag_s: float = 0
) -> AsyncIterator[Setup]:
    pki = PKIDirectory.init(tmp_path / "pki", instance="UZ")
    ca = pki.issuing_ca()
    responder_key, responder_chain = pki.ocsp_signer()
    lag = [dt.timedelta(seconds=lag_s)]
    responder = OCSPResponder(
        key=responder_key,
        certificate=responder_chain[0],
        issuers=[ca.certificate],
        source=ca.records,
        next_update_s=next_update_s,
        clock=lambda: dt.datetime.now(dt.UTC) - lag[0],
    )
    key = generate_private_key()
    certificate: x509.Certificate = ca.issue(Profile.SIGN, "UZ/GOV/MINJUST", key.public_key())
    transport = SwitchableTransport(responder)
    async with OCSPClient(transport=transport, max_age_s=max_age_s) as client:
        stapled = StapledOCSP(
            client=client, certificate=certificate, issuer=ca.certificate, url="http://ocsp/"
        )
        await stapled.refresh()
        assert stapled()
        yield Setup(stapled, transport, certificate, ca.certificate, key, lag)


def _this_update(stapled: StapledOCSP) -> dt.datetime:
    assert stapled.this_update is not None
    return stapled.this_update


# -- the schedule ------------------------------------------------------------------------------


async def test_after_a_success_it_waits_a_quarter_of_the_remaining_life(tmp_path: Path) -> None:
    async with _stapled(tmp_path, next_update_s=180) as setup:
        start = _this_update(setup.stapled)
        assert setup.stapled.next_refresh_in_s(now=start) == 45.0
        later = start + dt.timedelta(seconds=100)
        assert setup.stapled.next_refresh_in_s(now=later) == 20.0


async def test_the_client_max_age_bounds_the_life_when_it_comes_first(tmp_path: Path) -> None:
    async with _stapled(tmp_path, next_update_s=3600, max_age_s=100) as setup:
        assert setup.stapled.next_refresh_in_s(now=_this_update(setup.stapled)) == 25.0


async def test_the_wait_is_at_most_the_refresh_interval(tmp_path: Path) -> None:
    async with _stapled(tmp_path, next_update_s=3600) as setup:
        assert setup.stapled.refresh_interval_s == 60.0
        assert setup.stapled.next_refresh_in_s(now=_this_update(setup.stapled)) == 60.0


async def test_the_wait_is_at_least_one_second(tmp_path: Path) -> None:
    async with _stapled(tmp_path, next_update_s=180) as setup:
        start = _this_update(setup.stapled)
        near = start + dt.timedelta(seconds=178)
        assert setup.stapled.next_refresh_in_s(now=near) == 1.0
        lapsed = start + dt.timedelta(seconds=300)
        assert setup.stapled.next_refresh_in_s(now=lapsed) == 1.0


async def test_after_failures_it_waits_twice_as_long_up_to_the_interval_then_resets(
    tmp_path: Path,
) -> None:
    async with _stapled(tmp_path, next_update_s=3600) as setup:
        stapled = setup.stapled
        waits = [stapled.next_refresh_in_s(failed=True) for _ in range(9)]
        assert waits == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]
        assert stapled.next_refresh_in_s(now=_this_update(stapled)) == 60.0  # a success
        assert stapled.next_refresh_in_s(failed=True) == 1.0


async def test_with_nothing_held_it_waits_one_second(tmp_path: Path) -> None:
    async with _stapled(tmp_path, next_update_s=3600) as setup:
        fresh = StapledOCSP(
            client=setup.stapled.client, certificate=setup.certificate, issuer=setup.issuer
        )
        assert fresh.this_update is None
        assert fresh() == b""
        assert fresh.next_refresh_in_s() == 1.0


# -- the loop ----------------------------------------------------------------------------------


async def _until(condition: Callable[[], object], *, within_s: float) -> float:
    """Poll ``condition`` every 0.2 s until it holds or ``within_s`` passes; the time taken."""
    start = time.monotonic()
    for _ in range(int(within_s / 0.2)):
        if condition():
            break
        await asyncio.sleep(0.2)
    return time.monotonic() - start


async def _watch(stapled: StapledOCSP, seconds: float) -> tuple[int, set[bytes]]:
    """Sample the stapled answer every 0.2 s: how many samples were empty, which answers."""
    empty, seen = 0, set()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        held = stapled()
        if held:
            seen.add(held)
        else:
            empty += 1
        await asyncio.sleep(0.2)
    return empty, seen


async def test_the_loop_keeps_an_answer_shorter_lived_than_the_interval_stapled(
    tmp_path: Path,
) -> None:
    # Answers live 8 s, far less than the 60 s interval: the loop must renew each one
    # before it lapses, for twice its life.
    async with _stapled(tmp_path, next_update_s=8) as setup:
        task = asyncio.create_task(setup.stapled.keep_fresh())
        try:
            empty, seen = await _watch(setup.stapled, 16.0)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        assert empty == 0, "the stapled answer lapsed"
        assert len(seen) >= 2, "no new answer was stapled"


async def test_the_loop_staples_again_soon_after_the_responder_returns(tmp_path: Path) -> None:
    async with _stapled(tmp_path, next_update_s=3) as setup:
        stapled = setup.stapled
        task = asyncio.create_task(stapled.keep_fresh())
        try:
            setup.transport.up = False
            await _until(lambda: not stapled(), within_s=30)
            assert stapled() == b"", "the answer did not lapse while the responder was away"
            await asyncio.sleep(3.0)  # a few failed attempts: the wait has grown to 4 s
            setup.transport.up = True
            waited_s = await _until(stapled, within_s=30)
            assert stapled(), "nothing stapled 30 s after the responder's return"
            # The next attempt was due at most 8 s after the return (1 + 2 + 4 s of
            # waits before it); the old fixed 60 s period could have taken a minute.
            assert waited_s < 20
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


# -- past its bound ----------------------------------------------------------------------------


async def _withheld_past_its_bound(
    tmp_path: Path, *, lag_s: float, next_update_s: int, max_age_s: float
) -> None:
    """An answer ``lag_s`` old when fetched is stapled until its bound, then withheld (the
    signer refuses with ``ocsp_unavailable``), then stapled again after a refresh from a
    responder in time."""
    async with _stapled(
        tmp_path, next_update_s=next_update_s, max_age_s=max_age_s, lag_s=lag_s
    ) as setup:
        stapled = setup.stapled
        signer = HeaderSigner(
            key=setup.key,
            certificate_chain=[setup.certificate, setup.issuer],
            ocsp_response=stapled,
        )
        header = request_header_for(
            message_id="m-1",
            client=SubsystemId.parse("UZ/GOV/MINJUST/property"),
            service=ServiceId.for_method(
                subsystem=SubsystemId.parse("UZ/GOV/CADASTRE/registry"),
                method_path="/cadastre.v1.Cadastre/GetParcel",
            ),
            body=b"x",
            created_at=dt.datetime.now(dt.UTC),
        )
        held = stapled()
        assert signer.sign(header).ocsp_response == held
        bound = min(
            _this_update(stapled) + dt.timedelta(seconds=next_update_s),
            _this_update(stapled) + dt.timedelta(seconds=max_age_s),
        )
        await asyncio.sleep((bound - dt.datetime.now(dt.UTC)).total_seconds() + 1.0)
        assert stapled() == b"", "an answer past its bound is withheld"
        with pytest.raises(SigningError) as refused:
            signer.sign(header)
        assert refused.value.code is ErrorCode.OCSP_UNAVAILABLE
        assert refused.value.status is grpc.StatusCode.UNAVAILABLE

        setup.lag[0] = dt.timedelta(0)  # the responder is back (the cached answer is unusable)
        await stapled.refresh()
        assert stapled() not in {b"", held}
        assert signer.sign(header).ocsp_response == stapled()


async def test_stapled_answer_past_its_next_update_makes_signing_ocsp_unavailable(
    tmp_path: Path,
) -> None:
    await _withheld_past_its_bound(tmp_path, lag_s=100, next_update_s=103, max_age_s=3600)


async def test_stapled_answer_older_than_the_max_age_makes_signing_ocsp_unavailable(
    tmp_path: Path,
) -> None:
    await _withheld_past_its_bound(tmp_path, lag_s=2, next_update_s=3600, max_age_s=5)
