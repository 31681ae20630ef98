"""Governance commands: ``continuum-mcp federation propose|proposals|vote-proposal|opt-in|take-part|
opt-out|halt|report|adopt|kinds``. Each is one call of the core API; errors exit with the taxonomy's codes."""

from __future__ import annotations

import argparse
import json
from typing import Any

from continuum_mcp.app import Continuum
from continuum_mcp.cli._common import add_command, emit, json_object
from continuum_mcp.errors import InvalidInput


def _guarantee_line(g: dict[str, Any] | None) -> str:
    if not g:
        return "guarantee: not computable (unsupported kind or parameters)"
    return (f"guarantee: epsilon {g['epsilon']:.3f} at delta {g['delta']:g} over {g['rounds']} round(s) "
            f"(noise multiplier {g['noise_multiplier']:g}, clip {g['clip']:g}, at least {g['min_participants']} "
            "participants)")


def cmd_kinds(args: argparse.Namespace, app: Continuum) -> int:
    kinds = app.session_kinds()
    return emit(args, kinds, lambda: "\n".join(f"{k.kind}: {_guarantee_line(k.guarantee)}\n  touches: {k.data_touched}"
                                               for k in kinds))


def cmd_propose(args: argparse.Namespace, app: Continuum) -> int:
    params = json_object(args.params, "--params") or {}
    if not isinstance(params, dict):
        raise InvalidInput("--params must be a JSON object of session parameters")
    r = app.propose(args.kind, title=args.title, expected_benefit=args.benefit, data_description=args.data,
                    discussion_seconds=None if args.discussion_days is None else int(args.discussion_days * 86400),
                    **params)
    return emit(args, r, lambda: f"proposed {r.proposal_id} ({r.kind}, {r.rounds} rounds); discussion until "
                                 f"{r.discussion_deadline} (unix time)")


def cmd_proposals(args: argparse.Namespace, app: Continuum) -> int:
    ps = app.proposals()
    return emit(args, ps, lambda: "\n".join(f"{p.proposal_id}  {p.phase:<10} {p.kind}  round {p.round}/{p.rounds}  "
                                            f"{p.title}" for p in ps) or "no proposals")


def cmd_vote(args: argparse.Namespace, app: Continuum) -> int:
    r = app.vote_proposal(args.proposal_id, args.choice, args.concern or "")
    return emit(args, r, lambda: r.detail)


def cmd_opt_in(args: argparse.Namespace, app: Continuum) -> int:
    v = app.opt_in(args.proposal_id)
    return emit(args, v, lambda: f"opted in to {args.proposal_id}\nwhat it touches: {v.data_description}\n"
                                 f"{_guarantee_line(v.guarantee)}\n{v.note}")


def cmd_take_part(args: argparse.Namespace, app: Continuum) -> int:
    t = app.take_part(args.proposal_id, timeout_seconds=args.seconds)

    def human() -> str:
        if t.refused:
            return f"not taking part in {args.proposal_id}: {t.refused}"
        took = ", ".join(str(r) for r in t.rounds_taken) or "none yet (run it again while the session runs)"
        return f"took part in {args.proposal_id}: rounds {took}"
    return emit(args, t, human)


def cmd_opt_out(args: argparse.Namespace, app: Continuum) -> int:
    r = app.opt_out(args.proposal_id)
    return emit(args, r, lambda: r.detail)


def cmd_halt(args: argparse.Namespace, app: Continuum) -> int:
    r = app.halt(args.proposal_id)
    return emit(args, r, lambda: r.detail)


def cmd_adopt(args: argparse.Namespace, app: Continuum) -> int:
    r = app.adopt(args.proposal_id, approve=args.choice == "approve")
    return emit(args, r, lambda: r.detail)


def cmd_report(args: argparse.Namespace, app: Continuum) -> int:
    v = app.session_report(args.proposal_id)

    def human() -> str:
        s, t = v.report.summary, v.tally
        share = "-" if t.approval_share is None else f"{t.approval_share:.0%}"
        lines = [f"{s.proposal_id}  {s.title}", f"kind {s.kind}, phase {s.phase}, round {s.round} of {s.rounds}",
                 f"own tally: {t.decision} ({t.approve} approve, {t.reject} reject, {t.abstain} abstain, {share}); "
                 f"{t.opt_ins_at_deadline} opt-ins at the deadline, {len(t.participants)} taking part; "
                 f"halt votes {t.halt_votes}{' (halted)' if t.halted else ''}"
                 + ("" if v.agrees else "  [the coordinator's tally differs]"),
                 _guarantee_line(v.guarantee),
                 f"privacy spent per participant so far: epsilon {v.report.epsilon_spent_per_participant:.3f}"]
        if v.own_privacy is not None:
            p = v.own_privacy
            lines.append(f"your ledger: learning epsilon {p.spent_epsilon:.3f} of {p.budget_epsilon:g} this window; "
                         f"releases and sessions together epsilon {p.total_epsilon:.3f}")
        lines += [f"round {r.round}: {r.outcome}, ~{r.noisy_participants:.1f} participants" if r.noisy_participants
                  is not None else f"round {r.round}: {r.outcome}" for r in v.report.rounds]
        lines += [f"concern: {c}" for c in t.concerns] + [f"dropped statement of {i.signer}: {i.reason}"
                                                          for i in t.invalid]
        if v.report.result:
            lines.append("result: " + json.dumps({k: val for k, val in v.report.result.items() if k != "vectors"})[:400])
        return "\n".join(lines + [v.note])
    return emit(args, v, human)


def add_parsers(fs: Any, common: list[argparse.ArgumentParser]) -> None:
    s = add_command(fs, "kinds", "learning-session kinds and the computed guarantee of their defaults", common)
    s.set_defaults(func=cmd_kinds)
    s = add_command(fs, "propose", "propose a learning session (the federation discusses, votes, opts in)", common)
    s.add_argument("kind", help="session kind (see `federation kinds`)")
    s.add_argument("--title", required=True, help="one line saying what the session learns")
    s.add_argument("--benefit", required=True, help="the expected benefit, in plain words")
    s.add_argument("--data", help="what it touches on each instance (default: the kind's own description)")
    s.add_argument("--discussion-days", type=float, help="discussion period in days (default: the federation's)")
    s.add_argument("--params", help='session parameters as JSON, e.g. \'{"rounds": 3, "noise_multiplier": 1.1}\'')
    s.set_defaults(func=cmd_propose)
    s = add_command(fs, "proposals", "list proposals and their phases", common)
    s.set_defaults(func=cmd_proposals)
    s = add_command(fs, "vote-proposal", "sign a ballot on a proposal (a later ballot replaces yours)", common)
    s.add_argument("proposal_id", help="e.g. prop-0123456789abcdef0123")
    s.add_argument("choice", choices=["approve", "reject", "abstain"], help="your ballot")
    s.add_argument("--concern", help="an optional concern, published with the ballot")
    s.set_defaults(func=cmd_vote)
    s = add_command(fs, "take-part", "send this instance's share of a running session you opted in to", common)
    s.add_argument("proposal_id", help="e.g. prop-0123456789abcdef0123")
    s.add_argument("--seconds", type=float, default=60.0,
                   help="how long to take part before returning (run it again while the session runs)")
    s.set_defaults(func=cmd_take_part)
    for name, func, what in (("opt-in", cmd_opt_in, "consent to take part in a session (shows what it touches)"),
                             ("opt-out", cmd_opt_out, "stop taking part from the next round"),
                             ("halt", cmd_halt, "vote to halt a running session"),
                             ("report", cmd_report, "a session's report, counted by this client")):
        s = add_command(fs, name, what, common)
        s.add_argument("proposal_id", help="e.g. prop-0123456789abcdef0123")
        s.set_defaults(func=func)
    s = add_command(fs, "adopt", "vote on adopting a session's result (a new codebook version)", common)
    s.add_argument("proposal_id", help="e.g. prop-0123456789abcdef0123")
    s.add_argument("choice", choices=["approve", "reject"], help="your vote (no default: a vote is explicit)")
    s.set_defaults(func=cmd_adopt)
