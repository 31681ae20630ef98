"""Text embedders for continuum-mcp.

The memory store depends only on the :class:`Embedder` protocol, so any model (or a test double
of another project's) can be swapped in; the default is the bundled all-MiniLM-L6-v2.
"""

from embeddings.base import Embedder, EmbedderError
from embeddings.integrity import BUNDLED_MODEL_SHA256, verify_model_files
from embeddings.sentence import SentenceTransformerEmbedder, bundled_model_path

__all__ = ["BUNDLED_MODEL_SHA256", "Embedder", "EmbedderError", "SentenceTransformerEmbedder", "bundled_model_path",
           "verify_model_files"]
