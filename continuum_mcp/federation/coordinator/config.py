"""Every option of the coordinator, spelled once.

Why one model: the options used to be written four times (argparse, the service constructor, the
engine's config, the CLI) and drifted. ``CoordinatorConfig`` is the only list; the command line is
generated from its fields (flag = field name with dashes, or the field's ``flags`` extra; help =
the field's description; the default is shown), and every part of the coordinator reads the same
validated object.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from continuum_mcp.errors import InvalidInput
from continuum_mcp.federation.governance import GovernanceRules
from continuum_mcp.federation.protocol import CreditRules, ModeName
from continuum_mcp.secagg import SparseDesign


#: the environment variable that names the coordinator's PostgreSQL database (``--database``)
DATABASE_ENV = "CONTINUUM_COORDINATOR_DATABASE"


def _flags(*names: str) -> dict[str, Any]:
    return {"flags": list(names)}


class CoordinatorConfig(BaseModel):
    """The coordinator's settings (immutable once the service runs)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    storage_path: Path = Field(default=Path("coordinator-data"), json_schema_extra={"flags": ["--storage"], "required": True},
                               description="directory for the coordinator's SQLite files")
    database: str | None = Field(default_factory=lambda: os.environ.get(DATABASE_ENV) or None,
                                 description="postgresql://user:pass@host:port/dbname to keep the coordinator's state "
                                             f"in PostgreSQL, shared by several coordinator processes (env {DATABASE_ENV}; "
                                             "default: SQLite files in the storage directory)")
    database_pool_size: int = Field(default=16, ge=1, le=1000,
                                    description="PostgreSQL connections per coordinator process")
    host: str = Field(default="127.0.0.1", description="address to listen on")
    port: int = Field(default=0, ge=0, le=65535, description="TCP port (0: any free port)")
    federation_id: str = Field(default="fed-default", min_length=1, max_length=128,
                               description="the federation this storage serves (pinned on first start)")
    privacy_mode: ModeName = Field(default="high", description="mode every round is released under")
    budget_epsilon: float | None = Field(
        default=None, gt=0, description="override the mode's per-window epsilon budget (default: the mode's own); "
                                        "members check rounds against their own mode, so a raised budget only "
                                        "works with members configured alike (test federations)")
    min_contributors: int = Field(default=3, ge=1, description="hard floor of distinct contributors per release")
    require_contribution: bool = Field(default=True, description="queries and downloads cost credits")
    private: bool = Field(default=True, json_schema_extra={"flags": ["--open"], "invert": True, "cli_help":
                                             "no admission tokens (an open federation cannot resist fake "
                                             "identities) [private: %(default)s]"},
                          description="members need a single-use admission token to join")
    admin_token: str | None = Field(default=None, description="enables the /v1/admin routes")
    round_interval_seconds: float = Field(default=30 * 86400.0, gt=0, json_schema_extra=_flags("--round-interval"),
                                          description="seconds between round closes: a round is one release window, "
                                                      "so keep it at window_days (members take part once per window)")
    phase_timeout_seconds: float = Field(default=60.0, gt=0, json_schema_extra=_flags("--phase-timeout"),
                                         description="seconds per secure-aggregation phase")
    window_days: float = Field(default=30.0, gt=0, description="release window, days: each member's ledger "
                                                              "admits one window's release per this many days")
    rate_limit_per_minute: float = Field(default=1200.0, gt=0, json_schema_extra=_flags("--rate-limit"),
                                         description="requests per minute per member identity")
    address_rate_limit_per_minute: float = Field(
        default=300.0, gt=0, json_schema_extra=_flags("--address-rate-limit"),
        description="requests per minute per client address from callers that are not members "
                    "(unsigned, joining, or not admitted): fresh key pairs do not reset it")
    slots: int = Field(default=256, ge=1, description="codebook slots K")
    dim: int = Field(default=384, ge=1, description="embedding dimension")
    codebook_version: str = Field(default="v0", description="codebook version announced to members")
    replay_window_seconds: int = Field(default=300, ge=1, description="accepted clock skew of signed requests")
    sybil_fraction: float = Field(default=1 / 3, ge=0, lt=1,
                                  description="fraction of a roster assumed to be fake identities; each client's "
                                              "noise share is raised so the honest rest alone adds the mode's noise "
                                              "(clients refuse rounds calibrated for less than their own 1/3)")
    max_invites_per_day: int = Field(default=1000, ge=1,
                                     description="admission tokens that may be minted per 24 hours (each is a possible "
                                                 "fake identity); every minting is journalled")
    quality_vote_threshold: int = Field(default=3, ge=1, description="net up-votes that credit a pattern's contributors")
    tick_seconds: float = Field(default=0.2, gt=0, description="how often deadlines and the schedule are checked")
    keep_alive_timeout_seconds: float = Field(default=5.0, gt=0,
                                              description="an idle keep-alive connection is closed after this")
    header_timeout_seconds: float = Field(default=10.0, gt=0,
                                          description="a connection must send complete request headers within this")
    trusted_proxies: str | None = Field(
        default=None, description="comma-separated addresses of reverse proxies whose X-Forwarded-For names the "
                                  "client (per-address rate limits then see the real client); unset: the TCP peer "
                                  "is the client and X-Forwarded-For is ignored")
    log_level: str = Field(default="INFO", description="logging level")
    governance: GovernanceRules = Field(default_factory=GovernanceRules, json_schema_extra=_flags("--governance"),
                                        description="learning-session governance rules as JSON, e.g. "
                                                    '\'{"min_discussion_seconds": 86400}\' (GovernanceRules fields)')
    credit_rules: CreditRules = Field(default_factory=CreditRules, json_schema_extra={"cli": False},
                                      description="earning and spending of credits")
    secaggplus_min_roster: int = Field(
        default=200, ge=3, json_schema_extra=_flags("--secaggplus-min-roster"),
        description="rosters of at least this many members use SecAgg+ (each member keyed to k = O(log n) "
                    "neighbours) instead of Bonawitz's complete graph; members check the graph against the same design")
    secaggplus_design: SparseDesign = Field(default_factory=SparseDesign, json_schema_extra={"cli": False},
                                            description="what SecAgg+ rounds tolerate (dropout, corrupt fraction, "
                                                        "bounds); its min_roster is secaggplus_min_roster")

    def sparse_design(self) -> SparseDesign:
        """The SecAgg+ design of this federation's rounds (the threshold is ``secaggplus_min_roster``).

        Why 200 by default: below it the default design's k is close to n (72 of 99 at n = 100,
        where SecAgg+ saved little: 0.67 s against 1.08 s of server CPU, 8.3 against 8.5 MB), so it
        would trade Bonawitz's guarantee (safe against any t - 1 colluders) for a probabilistic one
        for no gain; from about 200 on k stays near 76-82 while n grows, and at n = 500 SecAgg+ needs a
        quarter of Bonawitz's server CPU and bytes (docs/secagg.md, measured costs)."""
        return self.secaggplus_design.model_copy(update={"min_roster": self.secaggplus_min_roster})

    @field_validator("governance", mode="before")
    @classmethod
    def _rules_from_json(cls, value: Any) -> Any:
        return GovernanceRules.model_validate_json(value) if isinstance(value, str) else value

    @classmethod
    def build(cls, **options: Any) -> CoordinatorConfig:
        """Validate options (``None`` means "the default"); a bad value is ``InvalidInput`` naming it."""
        options = {k: v for k, v in options.items() if v is not None or k not in cls.model_fields
                   or cls.model_fields[k].get_default(call_default_factory=True) is None}
        try:
            return cls(**options)
        except ValidationError as exc:
            msgs = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
            raise InvalidInput(msgs) from exc


def _extra(name: str) -> dict[str, Any]:
    extra = CoordinatorConfig.model_fields[name].json_schema_extra
    return extra if isinstance(extra, dict) else {}


def build_parser(prog: str = "continuum-mcp coordinator", *, port_default: int = 8080,
                 epilog: str | None = None) -> argparse.ArgumentParser:
    """An argparse parser with one option per ``CoordinatorConfig`` field (defaults shown)."""
    p = argparse.ArgumentParser(prog=prog, description="Run a federation coordinator.", epilog=epilog,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for name, field in CoordinatorConfig.model_fields.items():
        extra = _extra(name)
        if extra.get("cli") is False:
            continue
        flags = list(extra.get("flags", [])) or ["--" + name.replace("_", "-")]
        default = port_default if name == "port" else field.get_default(call_default_factory=True)
        kw: dict[str, Any] = {"dest": name, "help": field.description}
        if field.annotation is bool and extra.get("invert"):
            kw.update(action="store_false", default=default, help=extra.get("cli_help", field.description))
        elif field.annotation is bool:
            kw.update(action=argparse.BooleanOptionalAction, default=default)
        else:
            choices = get_args(field.annotation) if name == "privacy_mode" else None
            kw.update(default=default, choices=choices or None,
                      type=None if field.annotation in (str, str | None) or choices else _cli_type(field.annotation))
        if extra.get("required"):
            kw.pop("default")
            kw["required"] = True
        p.add_argument(*flags, **kw)
    return p


def _cli_type(annotation: Any) -> Any:
    return annotation if annotation in (int, float, Path) else str


def config_from_args(args: argparse.Namespace) -> CoordinatorConfig:
    names = [n for n in CoordinatorConfig.model_fields if _extra(n).get("cli") is not False]
    return CoordinatorConfig.build(**{n: getattr(args, n) for n in names})


def parse_config(argv: Sequence[str], **parser_kw: Any) -> CoordinatorConfig:
    return config_from_args(build_parser(**parser_kw).parse_args(list(argv)))


__all__ = ["DATABASE_ENV", "CoordinatorConfig", "build_parser", "config_from_args", "parse_config"]
