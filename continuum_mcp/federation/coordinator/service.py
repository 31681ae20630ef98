"""The coordinator's core API: one method per protocol route, typed in and out, no HTTP.

Why a core beside the engine: everything a second adapter (a CLI, another transport, a test) would
need -- admission and mode checks on join, submission limits, slot listing, query and download
charges, verification and votes -- lives here, so the HTTP adapter only authenticates, parses and
translates errors. Methods take the already-authenticated caller id.
"""

from __future__ import annotations

import logging
import re
import secrets
from datetime import datetime, timezone
from typing import Any

import numpy as np

from continuum_mcp import __version__
from continuum_mcp.errors import Conflict, Forbidden, InvalidInput, NotFound
from continuum_mcp.federation.coordinator import _integrity_sql as isql
from continuum_mcp.federation.coordinator import _release_sql as rsql
from continuum_mcp.federation.coordinator.config import CoordinatorConfig
from continuum_mcp.federation.coordinator.engine import RoundEngine
from continuum_mcp.federation.coordinator.store import CoordinatorStore, Member
from continuum_mcp.federation import protocol as wire
from continuum_mcp.privacy.codebook import SLOT_INDEX_BITS, VERSION_TAG_BITS, slot_id, split_slot_id, version_slot_ids
from continuum_mcp.privacy.modes import PrivacyPolicy
from continuum_mcp.secagg import SignedMessage

logger = logging.getLogger(__name__)

_PATTERN_ID = re.compile(r"^p-(\d{1,10})$")
_MODE_STRICTNESS = {"open": 0, "balanced": 1, "high": 2}


def mode_allows(federation_mode: str, member_mode: str) -> bool:
    """A member joins only a federation whose mode is at least as private as its own."""
    return _MODE_STRICTNESS[federation_mode] >= _MODE_STRICTNESS[member_mode]


def parse_pattern_id(pattern_id: str, slots: int) -> int:
    """The slot id of a pattern id ``p-<slot id>`` (of any codebook version: a pattern released
    under an earlier version can still be verified and voted on)."""
    m = _PATTERN_ID.match(pattern_id)
    if m is None or int(m.group(1)) >= 1 << (SLOT_INDEX_BITS + VERSION_TAG_BITS) \
            or split_slot_id(int(m.group(1)))[1] >= slots:
        raise NotFound(f"no released pattern {pattern_id!r}")
    return int(m.group(1))


class CoordinatorService:
    """Membership, contributions, rounds, patterns and credits for authenticated callers."""

    def __init__(self, config: CoordinatorConfig, store: CoordinatorStore, engine: RoundEngine,
                 policy: PrivacyPolicy, codebook: np.ndarray | None = None) -> None:
        self.config, self.store, self.engine, self.policy = config, store, engine, policy
        self.codebook = codebook
        self.credits = engine.credits
        #: proposals and learning sessions (set by the coordinator process; None: no governance routes)
        self.governance: Any = None

    def _member_level(self, caller: str, member: Member | None = None) -> str:
        """The caller's level (``member``: its row, when the adapter already read it to authenticate)."""
        member = member if member is not None and member.instance_id == caller else self.store.get_member(caller)
        if member is None:
            raise NotFound("not a member")
        return member.level

    def _balance(self, conn: object, caller: str) -> wire.CreditBalance:
        return self.credits.balance(conn, caller, self.engine.now())  # type: ignore[arg-type]

    # ------------------------------------------------------------------------------ membership

    def health(self) -> wire.Health:
        return wire.Health(version=__version__, federation_id=self.config.federation_id)

    def codebook_in_use(self) -> tuple[str, np.ndarray | None]:
        """The codebook in use: the one adopted by governance vote last, else the configured one."""
        adopted = None if self.governance is None else self.governance.adopted_codebook()
        if adopted is not None and adopted.vectors.shape == (self.config.slots, self.config.dim):
            return adopted.version, adopted.vectors
        return self.config.codebook_version, self.codebook

    def federation(self) -> wire.FederationInfo:
        c = self.config
        return wire.FederationInfo(
            federation_id=c.federation_id, private=c.private, privacy_mode=c.privacy_mode,
            min_contributors=c.min_contributors, require_contribution=c.require_contribution,
            codebook_version=self.codebook_in_use()[0], slots=c.slots, dim=c.dim,
            round_interval_seconds=int(c.round_interval_seconds),
            phase_timeout_seconds=max(1, int(c.phase_timeout_seconds)), credit_rules=c.credit_rules,
            sybil_fraction=c.sybil_fraction)

    def join(self, caller: str, public_key: bytes, req: wire.JoinRequest) -> wire.JoinResponse:
        fed_mode = self.config.privacy_mode
        if not mode_allows(fed_mode, req.privacy_mode):
            raise InvalidInput(f"this federation releases in {fed_mode} mode; your mode {req.privacy_mode} forbids it")
        member, created = self.store.admit(caller, public_key, req.contribution_level, req.privacy_mode,
                                           req.admission_token, private=self.config.private, now=self.engine.now())
        if created:
            logger.info("admitted %s (%s, %s)", caller, member.level, member.mode)
        return wire.JoinResponse(instance_id=caller, federation=self.federation(),
                            joined_at=datetime.fromtimestamp(member.joined_at, tz=timezone.utc))

    def status(self, caller: str) -> wire.MemberStatus:
        member = self.store.get_member(caller)
        if member is None:
            raise NotFound("not a member")
        cur = self.store.current_round()
        with self.store.reading() as conn:
            balance = self._balance(conn, caller)
            last = rsql.last_released_round(conn)
        return wire.MemberStatus(
            instance_id=caller, contribution_level=member.level, privacy_mode=member.mode,  # type: ignore[arg-type]
            joined_at=datetime.fromtimestamp(member.joined_at, tz=timezone.utc), credits=balance,
            epsilon_spent_window=self.engine.ledger_spent(caller), current_round=cur.round_id if cur else 0,
            last_released_round=last)

    def leave(self, caller: str) -> wire.DeletionReceipt:
        n, withdrawn = self.engine.withdraw(caller, leave=True)
        return wire.DeletionReceipt(deleted_submissions=n, withdrawn_patterns=withdrawn)

    # ------------------------------------------------------------------------------ contributions

    def contribute(self, caller: str, request: wire.ContributionRequest, member: Member | None = None
                   ) -> wire.ContributionReceipt:
        level = self._member_level(caller, member)
        slots = [p.slot for p in request.patterns]
        version = self.codebook_in_use()[0]
        ids = set(version_slot_ids(version, self.config.slots))
        if not set(slots) <= ids:
            first = slot_id(version, 0)
            raise InvalidInput(f"patterns.slot must be a slot id of the codebook in use, {version} "
                               f"(ids {first} to {first + self.config.slots - 1}: its {self.config.slots} slots); "
                               "re-slot the patterns under it")
        if len(set(slots)) != len(slots):
            raise InvalidInput("patterns.slot: at most one pattern per slot per round")
        cap = self.policy.level(level).max_slots
        if len(slots) > cap:
            raise InvalidInput(f"patterns: level {level} allows at most {cap} patterns per round")
        for p in request.patterns:
            tokens = [ph.token for ph in p.phrases]
            if len(set(tokens)) != len(tokens):
                raise InvalidInput("patterns.phrases.token: duplicate phrase token in one pattern")
            if p.statement_ciphertext is not None and self.config.privacy_mode != "open":
                raise InvalidInput(f"patterns.statement_ciphertext: a {self.config.privacy_mode} federation releases "
                                   "no statements, so it accepts none (send phrases only)")
        self._refuse_substitutions(request)
        round_id = self.engine.submit(caller, request)
        with self.store.reading() as conn:
            pending = self._balance(conn, caller).pending
        return wire.ContributionReceipt(round_id=round_id, accepted_patterns=len(slots), pending_credits=pending)

    def _refuse_substitutions(self, request: wire.ContributionRequest) -> None:
        """Refuse (and so never credit) a ciphertext that differs from the one released for its
        token. Phrase and statement ciphertexts are deterministic (protocol v2), so an honest
        member contributing a released phrase sends exactly the released ciphertext; another one
        under that token can only be a substituted text (every reader would drop it anyway)."""
        phrases = [(ph.token, ph.ciphertext) for p in request.patterns for ph in p.phrases]
        statements = [(p.statement_token, p.statement_ciphertext) for p in request.patterns
                      if p.statement_token is not None]
        with self.store.reading() as conn:
            released = isql.released_ciphertexts(conn, [t for t, _ in phrases])
            released_st = isql.released_statement_ciphertexts(conn, [str(t) for t, _ in statements])
        for what, pairs, known in (("phrase", phrases, released), ("statement", statements, released_st)):
            for token, ct in pairs:
                if token in known and ct not in known[token]:
                    raise InvalidInput(f"patterns: a {what} ciphertext does not match the one released for its token; "
                                       "it is not the text of that token (substitution refused, nothing stored)")

    def delete_contributions(self, caller: str) -> wire.DeletionReceipt:
        n, withdrawn = self.engine.withdraw(caller)
        return wire.DeletionReceipt(deleted_submissions=n, withdrawn_patterns=withdrawn)

    def secagg_post(self, caller: str, round_id: int, kind: str, message: SignedMessage) -> wire.ActionReceipt:
        if kind not in wire.SECAGG_PHASES:
            raise NotFound(f"unknown secure-aggregation message kind {kind!r}")
        self.engine.receive(round_id, kind, caller, message)
        return wire.ActionReceipt(detail=f"{kind} accepted")

    # ------------------------------------------------------------------------------ patterns

    def slots(self) -> wire.SlotsResponse:
        """Released DP centroids; with a codebook, every slot (unreleased ones as codebook vectors)."""
        version, codebook = self.codebook_in_use()
        ids = version_slot_ids(version, self.config.slots)  # only this version's: releases never mix
        with self.store.reading() as conn:
            released = {v.slot: v for v in rsql.slot_vectors(conn) if v.slot in set(ids)}
        infos: list[wire.SlotInfo] = []
        for index, s in enumerate(ids):
            v = released.get(s)
            if v is not None:
                infos.append(wire.SlotInfo(slot=s, vector=v.vector, noisy_contributors=v.noisy_count,
                                      released_at_round=v.released_at_round))
            elif codebook is not None:
                infos.append(wire.SlotInfo(slot=s, vector=codebook[index].astype(float).tolist(),
                                      noisy_contributors=0.0, released_at_round=-1))
        return wire.SlotsResponse(codebook_version=version, slots=infos)

    def query(self, caller: str, request: wire.QueryRequest, member: Member | None = None) -> wire.QueryResponse:
        level = self._member_level(caller, member)
        # a read transaction unless the query is charged (then the balance check and the debit are one
        # write, under a lock of the caller's rows only)
        with self.store.transaction(f"member:{caller}") if self.credits.require_contribution \
                else self.store.reading() as conn:
            now = self.engine.now()
            charged, free = self.credits.charge_query(conn, caller, priority=request.priority, level=level,
                                                      ref=secrets.token_hex(12), now=now)
            ids = set(version_slot_ids(self.codebook_in_use()[0], self.config.slots))
            patterns = rsql.released_patterns(conn, [s for s in request.slots if s in ids])
            balance = self.credits.balance(conn, caller, now)
        return wire.QueryResponse(patterns=[wire.ReleasedPattern.model_validate(p) for p in patterns], charged=charged,
                             free_tier=free, credits=balance)

    def download(self, caller: str) -> wire.DownloadResponse:
        with self.store.transaction(f"member:{caller}") as conn:
            now = self.engine.now()
            charged = self.credits.charge_download(conn, caller, secrets.token_hex(12), now)
            patterns = rsql.released_patterns(conn, None)
            balance = self.credits.balance(conn, caller, now)
        return wire.DownloadResponse(patterns=[wire.ReleasedPattern.model_validate(p) for p in patterns], charged=charged,
                                credits=balance)

    def _released_slot(self, conn: object, caller: str, pattern_id: str, what: str) -> int:
        slot = parse_pattern_id(pattern_id, self.config.slots)
        if slot not in rsql.pattern_slots(conn):  # type: ignore[arg-type]
            raise NotFound(f"no released pattern {pattern_id!r}")
        if caller in rsql.slot_contributors(conn, slot):  # type: ignore[arg-type]
            raise Forbidden(f"you contributed to this pattern; only other members can {what} it")
        return slot

    def verify(self, caller: str, pattern_id: str) -> wire.ActionReceipt:
        with self.store.transaction() as conn:
            slot = self._released_slot(conn, caller, pattern_id, "verify")
            now = self.engine.now()
            if not rsql.record_verification(conn, slot, caller, now):
                raise Conflict("you already verified this pattern")
            self.credits.earn_verification(conn, caller, pattern_id, now)
            balance = self.credits.balance(conn, caller, now)
        return wire.ActionReceipt(credits=balance, detail=f"verified {pattern_id}")

    def vote(self, caller: str, pattern_id: str, up: bool) -> wire.ActionReceipt:
        with self.store.transaction() as conn:
            slot = self._released_slot(conn, caller, pattern_id, "vote on")
            now = self.engine.now()
            rsql.record_vote(conn, slot, caller, up, now)
            ups, downs = rsql.vote_counts(conn, slot)
            detail = f"votes {ups} up, {downs} down"
            if ups - downs >= self.config.quality_vote_threshold and rsql.claim_quality_credit(conn, slot):
                window_start = now - self.config.window_days * 86400.0
                self.credits.earn_quality(conn, rsql.slot_contributors(conn, slot, window_start), pattern_id, now)
                detail += "; quality threshold reached, contributors credited"
            balance = self.credits.balance(conn, caller, now)
        return wire.ActionReceipt(credits=balance, detail=detail)

    def invites(self, count: int, via: str = "admin-http") -> wire.InviteResponse:
        """Mint admission tokens, limited per day and journalled (each token is a possible sybil)."""
        tokens = self.store.create_admission_tokens(count, max_per_day=self.config.max_invites_per_day, via=via,
                                                    now=self.engine.now())
        logger.info("minted %d admission token(s) via %s", count, via)
        return wire.InviteResponse(admission_tokens=tokens)

    def credit_balance(self, caller: str) -> wire.CreditBalance:
        with self.store.reading() as conn:
            return self._balance(conn, caller)


__all__ = ["CoordinatorService", "mode_allows", "parse_pattern_id"]
