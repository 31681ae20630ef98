"""membership.json: who this instance is in which federation. It holds the federation key, so
it is written atomically with mode 0600 and never sent anywhere."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from continuum_mcp._sqlite import atomic_write
from continuum_mcp.crypto.cipher import FederationCipher, Invite
from continuum_mcp.crypto.identity import Identity, b64decode, b64encode
from continuum_mcp.errors import BadInvite, Conflict, ContinuumError, CryptoError, InvalidInput, NotJoined, UpgradeRequired
from continuum_mcp.federation.api import TRANSIENT_ERRORS, CoordinatorAPI
from continuum_mcp.federation.client._models import (AutoSyncSettings, FederationStateError, FederationStatus,
                                                     JoinResult, Membership)
from continuum_mcp.federation.protocol import PROTOCOL_VERSION, JoinRequest, LevelName, ModeName
from continuum_mcp.privacy.codebook import Codebook
from continuum_mcp.privacy.ledger import LedgerStatus

#: privacy modes from most to least private: a member joins only a federation at least as private.
MODE_ORDER: dict[str, int] = {"high": 0, "balanced": 1, "open": 2}

MEMBERSHIP_FILE = "membership.json"


class MembershipFile:
    """Read, replace and forget the membership record; one writer at a time (``lock``)."""

    def __init__(self, directory: Path) -> None:
        self.path = Path(directory) / MEMBERSHIP_FILE
        self.lock = threading.RLock()

    def load(self) -> Membership | None:
        if not self.path.exists():
            return None
        try:
            return Membership.model_validate_json(self.path.read_bytes())
        except ValidationError as exc:
            raise FederationStateError(f"{self.path} is unreadable: {exc.errors()[0]['msg']}") from exc

    def require(self) -> Membership:
        m = self.load()
        if m is None:
            raise NotJoined("this instance has not joined a federation; use federation_join with an invite")
        return m

    def save(self, m: Membership) -> None:
        with self.lock:
            atomic_write(self.path, m.model_dump_json(indent=2).encode("utf-8"), mode=0o600)

    def update(self, **changes: Any) -> Membership:
        with self.lock:
            m = self.require().model_copy(update=changes)
            self.save(m)
            return m

    def forget(self) -> None:
        with self.lock:
            self.path.unlink(missing_ok=True)


def cipher_of(m: Membership) -> FederationCipher:
    """The end-to-end cipher of the member's federation (the key never leaves this machine)."""
    return FederationCipher(b64decode(m.federation_key_b64, what="federation key", length=32), m.federation_id)


def join_federation(api: CoordinatorAPI, invite: Invite, identity: Identity, codebook: Codebook,
                    level: LevelName, mode: ModeName, existing: Membership | None) -> tuple[Membership, JoinResult]:
    """Check the coordinator against the invite and this client (federation id, mode, codebook),
    then join; only the invite's public part is sent, the federation key stays in the result."""
    if existing is not None and existing.federation_id != invite.federation_id:
        raise Conflict(f"already a member of federation {existing.federation_id}; leave it first")
    info, cb = api.federation(), codebook
    if info.api_version != PROTOCOL_VERSION:
        raise UpgradeRequired(f"the coordinator speaks federation protocol v{info.api_version}, this client "
                              f"v{PROTOCOL_VERSION}: upgrade the older side before joining")
    if info.federation_id != invite.federation_id:
        raise BadInvite(f"the coordinator serves federation {info.federation_id}, the invite is for "
                        f"{invite.federation_id}")
    if MODE_ORDER[info.privacy_mode] > MODE_ORDER[mode]:
        raise InvalidInput(f"this federation releases in {info.privacy_mode} mode; your mode {mode} forbids it")
    # a learned version (``c-...``, adopted by vote) is followed right after joining, once this
    # client's own count of the adoption votes confirms it (``FederationClient.join``)
    follows = info.codebook_version.startswith("c-") and info.codebook_version != cb.version
    if (info.slots, info.dim) != (cb.slots, cb.dim) or (info.codebook_version != cb.version and not follows):
        raise InvalidInput(f"the federation uses codebook {info.codebook_version} ({info.slots} x {info.dim}); "
                           f"this client has {cb.version} ({cb.slots} x {cb.dim})")
    resp = api.join(JoinRequest(admission_token=invite.admission_token, contribution_level=level, privacy_mode=mode))
    if resp.instance_id != identity.instance_id:
        raise CryptoError("the coordinator admitted another instance id than this identity's")
    m = Membership(instance_id=resp.instance_id, coordinator_url=invite.coordinator_url,
                   federation_id=invite.federation_id, federation_key_b64=b64encode(invite.federation_key),
                   contribution_level=level, privacy_mode=mode, federation=resp.federation, joined_at=resp.joined_at,
                   auto_sync=existing.auto_sync if existing else AutoSyncSettings())
    fed_mode = resp.federation.privacy_mode
    note = ("open mode: patterns are released when at least min_contributors distinct members share them "
            "(k-anonymity, not differential privacy for the selection); counts and centroids stay DP"
            if fed_mode == "open" else "")
    return m, JoinResult(instance_id=m.instance_id, federation_id=m.federation_id, coordinator_url=m.coordinator_url,
                         contribution_level=level, privacy_mode=mode, federation_mode=fed_mode,
                         min_contributors=resp.federation.min_contributors, joined_at=resp.joined_at, note=note)


def member_status(m: Membership, ledger: LedgerStatus, api: CoordinatorAPI, *, auto_sync_running: bool,
                  outbox_waiting: int, cached_patterns: int) -> FederationStatus:
    """The member's status: local state, plus the coordinator's view when it can be reached."""
    st = FederationStatus(
        joined=True, instance_id=m.instance_id, federation_id=m.federation_id, coordinator_url=m.coordinator_url,
        contribution_level=m.contribution_level, privacy_mode=m.privacy_mode,
        federation_mode=m.federation.privacy_mode, privacy_budget_epsilon=ledger.budget_epsilon,
        privacy_spent_epsilon=round(ledger.spent_epsilon, 4), privacy_budget_left=round(ledger.remaining_epsilon, 4),
        privacy_total_epsilon=round(ledger.total_epsilon, 4),
        auto_sync=m.auto_sync, auto_sync_running=auto_sync_running, last_round=m.last_round,
        outbox_waiting=outbox_waiting, cached_patterns=cached_patterns, message=ledger.message)
    try:
        ms = api.status()
        st.coordinator_reachable = True
        st.credits, st.current_round, st.last_released_round = ms.credits, ms.current_round, ms.last_released_round
    except TRANSIENT_ERRORS as exc:
        st.coordinator_reachable = False
        st.message += f"; {exc.message}"
    except ContinuumError as exc:  # reachable, but refuses us (e.g. no longer admitted)
        st.coordinator_reachable = True
        st.message += f"; the coordinator refused the status request: {exc.code}: {exc.message}"
    return st
