"""What a sync does about the learning sessions this member opted in to.

Why: opting in is consent to take part in every round of the session, and a member who leaves
auto-sync on expects it to do so; a session round does not wait for anybody (an attempt without
enough members' keys by the phase timeout is tried again without them), so an opted-in member
that only takes part by hand is a dropout. An auto-sync pass therefore takes part in every session
this member stands opted in to that is running by its own count, while (in another thread) it does
the release sync; a manual ``sync`` never waits for session rounds and only says which sessions
run. A session that has not started or has ended costs one report fetch, never a wait; a failure of
one session is logged with its error code only and stops neither the release sync nor the others.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from continuum_mcp._governance_app import consents
from continuum_mcp.errors import ContinuumError, CryptoError, PrivacyBudgetExceeded
from continuum_mcp.federation.client._governance import Governance, member_governance
from continuum_mcp.federation.client._models import SessionSync, SyncResult

logger = logging.getLogger(__name__)

#: the longest one auto-sync pass takes part in sessions (and at most its interval). Why bounded:
#: the pass must come back to the release sync, to the setting (turned off, membership left) and
#: to a fresh count; why ten minutes: a session round is four phases of the coordinator's phase
#: timeout (a minute by default), so a turn sees rounds through, and one cut short mid-round
#: resumes in the next pass (started at once while the session runs) with its secure-aggregation
#: state kept (``SessionSeats``).
AUTO_TAKE_PART_SECONDS = 600.0
#: after a discussion deadline, auto-sync looks again every quarter of the phase timeout (within
#: these bounds) until the coordinator has decided: the first round's keys are due one phase
#: timeout after it opens. It stops looking early this long after the deadline (a coordinator
#: that does not decide is looked at again at the interval).
RECHECK_SECONDS = (2.0, 30.0)
PENDING_GRACE_SECONDS = 600.0
OVER_PHASES = frozenset({"rejected", "refused", "completed", "halted"})


def standing_opt_ins(federation_dir: Path) -> list[str]:
    """The sessions this instance stands opted in to (its local record: ``Governance.standing_opt_ins``)."""
    return sorted(consents(federation_dir))


def take_part_seconds(interval_minutes: float) -> float:
    return min(interval_minutes * 60.0, AUTO_TAKE_PART_SECONDS)


def recheck_seconds(phase_timeout_seconds: float) -> float:
    low, high = RECHECK_SECONDS
    return min(high, max(low, phase_timeout_seconds / 4))


def _failed(pid: str, exc: Exception) -> SessionSync:
    """Logged with the error code (or the exception's type) only; the message stays at debug.
    A ``CryptoError`` (the coordinator contradicts this client's count, or does not publish a
    statement of its own) is a refusal; anything else a failure, tried again at the next pass."""
    code = exc.code if isinstance(exc, ContinuumError) else type(exc).__name__
    logger.info("session %s: not taken part in at this sync (%s)", pid, code)
    logger.debug("session %s failed", pid, exc_info=exc)
    return SessionSync(proposal_id=pid, status="refused" if isinstance(exc, CryptoError) else "failed", error=code)


def one_session(gov: Governance, pid: str, rules: Any, *, take_part: float | None, recheck: float,
                sleep: Any) -> SessionSync:
    """One standing opt-in: counted once; taken part in for ``take_part`` seconds when it runs
    (None: only noted). Never raises: a failure is the result's ``error``."""
    try:
        v = gov.verified(pid, rules)
        phase, t = v.report.summary.phase, v.tally
        out = SessionSync(proposal_id=pid, status="waiting", phase=phase)
        if phase in OVER_PHASES or t.halted:
            gov.session_over(pid)
            out.status = "over"
        elif phase != "running":  # discussion or approved: look again when it may start
            left = v.report.summary.discussion_deadline - gov.now()
            out.next_check_seconds = max(left, recheck) if left > -PENDING_GRACE_SECONDS else None
        elif gov.identity.instance_id not in t.participants:
            out.status, out.error = "refused", "not_opted_in"
            out.note = "not among the session's participants (opted out, or opted in after the discussion)"
        elif take_part is None:
            out.status = "running"
            out.note = (f"session {pid} is running: take part with `continuum-mcp federation take-part {pid}` "
                        "(MCP: federation_governance action take_part), or turn auto-sync on")
        else:
            turn = gov.participate(pid, timeout_seconds=take_part, sleep=sleep)
            out.rounds_taken = turn.rounds_taken
            if turn.refused:
                logger.info("session %s: not taking part (%s)", pid, turn.refused_code)
                out.status, out.error = "refused", turn.refused_code
                if turn.refused_code == "busy":  # a take-part call has it: look again soon, it may end
                    out.next_check_seconds = recheck
            elif turn.session_over:
                out.status = "over"
            else:  # still running when the turn's time ran out: the next pass starts at once
                out.status, out.next_check_seconds = "took_part", 0.0
        return out
    except Exception as exc:  # one session's fault stops no other session and not the release sync
        return _failed(pid, exc)


def session_syncs(gov: Governance, *, take_part: float | None, recheck: float, sleep: Any) -> list[SessionSync]:
    """Every standing opt-in, each in its own thread (two running sessions are taken part in at
    once); nothing is fetched when there is none."""
    pids = gov.standing_opt_ins()
    if not pids:
        return []
    try:
        rules = gov.rules()
    except ContinuumError as exc:
        return [_failed(pid, exc) for pid in pids]
    with ThreadPoolExecutor(len(pids), thread_name_prefix="federation-session") as pool:
        return list(pool.map(lambda pid: one_session(gov, pid, rules, take_part=take_part, recheck=recheck,
                                                     sleep=sleep), pids))


def note_sessions(client: Any, result: SyncResult) -> SyncResult:
    """A manual sync: say which of the member's sessions run (one report each), wait for none."""
    m = client._membership.require()
    result.sessions = session_syncs(member_governance(client), take_part=None,
                                    recheck=recheck_seconds(m.federation.phase_timeout_seconds), sleep=None)
    result.message = "; ".join(n for n in [result.message, *(s.note for s in result.sessions if s.status == "running")]
                               if n)
    return result


def auto_sync_pass(client: Any, stop: threading.Event | None = None) -> SyncResult | None:
    """One auto-sync pass: contribute when there are new patterns; then the release sync and, in
    another thread meanwhile, a turn in every running session the member stands opted in to
    (bounded by :func:`take_part_seconds`; ``stop`` ends it early, as closing the client does)."""
    m = client.membership()
    if m is None:
        return None
    if m.auto_sync.contribute_on_sync and client.has_new_patterns():
        try:
            client.contribute()
        except PrivacyBudgetExceeded as exc:
            logger.info("auto-sync: not contributing: %s", exc.message)
    gov = member_governance(client)
    with ThreadPoolExecutor(1, thread_name_prefix="federation-sessions") as pool:
        sessions = pool.submit(session_syncs, gov, take_part=take_part_seconds(m.auto_sync.interval_minutes),
                               recheck=recheck_seconds(m.federation.phase_timeout_seconds),
                               sleep=(stop or client._closing).wait)
        try:
            result = client.sync(fetch_new=m.auto_sync.query_on_sync, note_sessions=False)
        except ContinuumError as exc:  # the sessions go on; the loop tries the release sync again
            logger.info("auto-sync: release sync failed (%s); retrying at the next pass", exc.code)
            result = SyncResult(release_error=exc.code, message=f"release sync failed ({exc.code})")
        result.sessions = sessions.result()
    return result


__all__ = ["AUTO_TAKE_PART_SECONDS", "PENDING_GRACE_SECONDS", "RECHECK_SECONDS", "auto_sync_pass", "note_sessions",
           "one_session", "recheck_seconds", "session_syncs", "standing_opt_ins",
           "take_part_seconds"]
