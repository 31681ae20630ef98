"""The embedder protocol: the only thing the store and the pattern pipeline know of a model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:  # numpy loads with the model, not when a server answers its handshake
    import numpy as np



class EmbedderError(RuntimeError):
    """The model could not be loaded or could not encode."""


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into unit-norm float32 vectors.

    ``model_id`` and ``dim`` must be answerable without loading the model, so that a server can
    describe itself (and check a store's manifest) while the weights are still loading.
    """

    @property
    def model_id(self) -> str: ...

    @property
    def dim(self) -> int: ...

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Return an array of shape (len(texts), dim), dtype float32, rows of unit L2 norm."""
        ...
