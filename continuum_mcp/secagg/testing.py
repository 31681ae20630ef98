"""Run one aggregation in-process with the real state machines (tests and benchmarks)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel

from continuum_mcp.crypto.identity import Identity
from continuum_mcp.crypto.signing import Verifier
from continuum_mcp.secagg.client import SecAggClient
from continuum_mcp.secagg.params import SecAggParams
from continuum_mcp.secagg.messages import AggregateResult, SignedMessage
from continuum_mcp.secagg.server import SecAggServer

DropPoint = Literal["before_advertise", "after_advertise", "after_share_keys", "after_masked_input"]


@dataclass
class SimulationReport:
    """Outcome and costs of :func:`simulate` (CPU seconds and serialised bytes per party)."""

    result: AggregateResult
    clients: dict[str, SecAggClient]
    client_cpu: dict[str, float] = field(default_factory=dict)
    client_bytes_sent: dict[str, int] = field(default_factory=dict)
    client_bytes_received: dict[str, int] = field(default_factory=dict)
    bytes_by_kind: dict[str, int] = field(default_factory=dict)  # all clients' sent bytes per phase
    server_cpu: float = 0.0
    server_bytes_sent: int = 0


def simulate(
    params: SecAggParams,
    identities: Sequence[Identity],
    inputs: Mapping[str, np.ndarray],
    verifier: Verifier,
    dropouts: Mapping[str, DropPoint] | None = None,
) -> SimulationReport:
    """Run one aggregation in-process with the real client and server state machines.

    Messages are serialised to JSON and parsed back on every hop, as a transport would; the
    ``dropouts`` map says at which point a client stops responding. Used by tests and benchmarks.
    """
    drops = dict(dropouts or {})
    server = SecAggServer(params, verifier, {i.instance_id: i.public_key for i in identities})
    clients = {i.instance_id: SecAggClient(i, params) for i in identities}
    cpu = {cid: 0.0 for cid in clients}
    sent = {cid: 0 for cid in clients}
    received = {cid: 0 for cid in clients}
    by_kind: dict[str, int] = {}
    server_cpu = 0.0
    server_sent = 0

    def hop(model: BaseModel) -> Any:
        return type(model).model_validate_json(model.model_dump_json())

    def client_call(cid: str, fn: Any, *args: Any) -> SignedMessage:
        start = time.process_time()
        msg = fn(*args)
        cpu[cid] += time.process_time() - start
        size = msg.wire_size()
        sent[cid] += size
        by_kind[msg.payload["kind"]] = by_kind.get(msg.payload["kind"], 0) + size
        return hop(msg)

    def server_call(fn: Any, *args: Any) -> Any:
        nonlocal server_cpu
        start = time.process_time()
        out = fn(*args)
        server_cpu += time.process_time() - start
        return out

    def phase(active: list[str], dropped_at: DropPoint, step: Callable[[SecAggClient], Any],
              incoming: Callable[[str], tuple[int, tuple[Any, ...]]], receive: Callable[[SignedMessage], None],
              ) -> list[str]:
        """Deliver each still-active client its input (counting the server's bytes) and hand the
        client's answer to the server; returns the clients that took part."""
        nonlocal server_sent
        still = [c for c in active if drops.get(c) != dropped_at]
        for cid in still:
            nbytes, args = incoming(cid)
            server_sent += nbytes
            server_call(receive, client_call(cid, step(clients[cid]), *args))
        return still

    wire_cache: dict[int, tuple[int, Any]] = {}

    def per_client(models: Mapping[str, BaseModel], *extra: Mapping[str, Any]
                   ) -> Callable[[str], tuple[int, tuple[Any, ...]]]:
        # A model shared by several clients (the complete graph's roster and survivor list) is
        # serialised and parsed once; the parsed model is immutable and clients only read it, so
        # this keeps large simulations quick without changing any party's work or byte count.
        def incoming(cid: str) -> tuple[int, tuple[Any, ...]]:
            model = models[cid]
            if id(model) not in wire_cache:
                wire = model.model_dump_json()
                wire_cache[id(model)] = (len(wire.encode("utf-8")), type(model).model_validate_json(wire))
            nbytes, parsed = wire_cache[id(model)]
            received[cid] += nbytes
            return nbytes, (parsed, *(m[cid] for m in extra))
        return incoming

    active = phase(list(clients), "before_advertise", lambda c: c.advertise_keys, lambda cid: (0, ()),
                   server.receive_advertisement)
    rosters = server_call(server.close_key_rosters)
    active = phase(active, "after_advertise", lambda c: c.share_keys, per_client(rosters),
                   server.receive_shares)
    inboxes = server_call(server.close_shares)
    active = phase(active, "after_share_keys", lambda c: c.masked_input, per_client(inboxes, inputs),
                   server.receive_masked_input)
    survivors = server_call(server.close_survivor_lists)
    phase(active, "after_masked_input", lambda c: c.unmask, per_client(survivors),
          server.receive_unmasking)
    result = server_call(server.finalize)
    return SimulationReport(result=result, clients=clients, client_cpu=cpu, client_bytes_sent=sent,
                            client_bytes_received=received, bytes_by_kind=by_kind, server_cpu=server_cpu,
                            server_bytes_sent=server_sent)
