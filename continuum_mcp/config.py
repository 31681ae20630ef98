"""Settings: where data lives and the knobs of the memory engine, passed in, never global."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError

from continuum_mcp.errors import InvalidInput

ENV_DATA_DIR = "CONTINUUM_DATA_DIR"
ENV_MODEL_PATH = "CONTINUUM_MODEL_PATH"
ENV_DEDUP_THRESHOLD = "CONTINUUM_DEDUP_THRESHOLD"


def default_data_dir() -> Path:
    """The platform's per-user data directory (e.g. ~/.local/share/continuum-mcp on Linux)."""
    import platformdirs

    return Path(platformdirs.user_data_dir("continuum-mcp", appauthor=False))


class Settings(BaseModel):
    """Everything the memory engine needs to know, with safe defaults."""

    data_dir: Path = Field(default_factory=default_data_dir)
    model_path: Path | None = Field(
        default=None, description="A sentence-transformers model directory; None = bundled all-MiniLM-L6-v2.")
    dedup_threshold: float = Field(
        default=0.95, ge=0.0, le=1.0,
        description="Cosine at or above which a new memory is compared with an existing one: merged if it "
                    "restates it with the same facts (numbers, dates, names, negation), otherwise stored "
                    "and linked as an update of it (1.0 turns both off; exact duplicates still fold).")
    relevance_floor: float = Field(
        default=0.2, ge=-1.0, le=1.0,
        description="Cosine below which a hit is not about the query (all-MiniLM-L6-v2: unrelated sentence "
                    "pairs sit around 0.0-0.15). Below it recall sets no_good_match, and keyword matches "
                    "do not lift a memory in hybrid fusion.")
    read_only: bool = Field(default=False, description="Open the store for reading only (e.g. a backup copy).")
    max_text_chars: int = Field(default=20_000, gt=0)
    max_tags: int = Field(default=32, gt=0)
    max_metadata_bytes: int = Field(default=16_384, gt=0)
    ivf_threshold: int = Field(
        default=200_000, gt=0,
        description="Past this many memories the vector index becomes IVF (approximate) instead of exact.")
    index_save_every: int = Field(
        default=2_000, gt=0, description="Persist the derived vector index after this many changes.")

    @classmethod
    def from_env(cls, data_dir: str | Path | None = None, model_path: str | Path | None = None,
                 **overrides: object) -> "Settings":
        """Explicit arguments win over CONTINUUM_* environment variables, which win over defaults."""
        values: dict[str, object] = dict(overrides)
        dd = data_dir or os.environ.get(ENV_DATA_DIR)
        if dd:
            values["data_dir"] = Path(dd).expanduser()
        mp = model_path or os.environ.get(ENV_MODEL_PATH)
        if mp:
            values["model_path"] = Path(mp).expanduser()
        dedup = os.environ.get(ENV_DEDUP_THRESHOLD)
        if dedup and "dedup_threshold" not in values:
            try:
                values["dedup_threshold"] = float(dedup)
            except ValueError:
                values["dedup_threshold"] = dedup  # pydantic names the problem below
        try:
            return cls(**values)  # type: ignore[arg-type]
        except ValidationError as exc:
            err = exc.errors()[0]
            raise InvalidInput(f"setting {'.'.join(map(str, err['loc']))}: {err['msg']}") from exc
