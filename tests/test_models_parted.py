"""LLMs published as pieces on PyPI (voice/models.py PARTED_LLMS): joined once, checked, refused when wrong."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from voice import models

pytestmark = pytest.mark.slow

SMALL = models.PARTED_LLMS["qwen2.5-coder-0.5b"]


def installed_or_skip(spec: models.PartedFile) -> list[Path]:
    try:
        return models.installed_parts(spec)
    except models.ModelNotFoundError as exc:
        pytest.skip(f"parts not installed: {exc}")


def test_a_named_llm_is_joined_once_into_the_models_dir_and_checked(tmp_path, monkeypatch):
    installed_or_skip(SMALL)
    monkeypatch.setenv("VOICE_MODELS_DIR", str(tmp_path))
    path = models.gguf_model(SMALL.name)
    assert path == tmp_path / SMALL.filename
    assert path.stat().st_size == SMALL.size
    assert path.read_bytes()[:4] == b"GGUF"
    assert models.llama_file(path) == path  # loaded as it is: no second copy
    written = path.stat().st_mtime_ns
    assert models.gguf_model(SMALL.name) == path
    assert path.stat().st_mtime_ns == written  # found, not joined again
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == [SMALL.filename]


def test_a_corrupted_part_is_refused_and_nothing_is_kept(tmp_path):
    parts = installed_or_skip(SMALL)
    corrupted = tmp_path / "copy" / parts[-1].name
    corrupted.parent.mkdir()
    shutil.copyfile(parts[-1], corrupted)
    with open(corrupted, "r+b") as handle:
        handle.seek(1000)
        byte = handle.read(1)
        handle.seek(1000)
        handle.write(bytes([byte[0] ^ 0xFF]))
    store = tmp_path / "models"
    with pytest.raises(models.ModelNotFoundError, match="SHA-256.*reinstall them: pip install 'voice-server"):
        models.join_parts(SMALL, [*parts[:-1], corrupted], store)
    assert not any(store.iterdir())  # the half-checked file was never renamed into place


def test_a_missing_part_is_refused_with_the_pip_line_that_installs_it(tmp_path):
    absent = dataclasses.replace(SMALL, parts=(*SMALL.parts[:-1], ("voice-test-absent-part6", "data/part06.bin")))
    with pytest.raises(models.ModelNotFoundError) as raised:
        models.installed_parts(absent)
    message = str(raised.value)
    missing = message.split("missing: ", 1)[1].split(")", 1)[0].split(", ")
    assert "voice-test-absent-part6" in missing  # the other parts are listed too where they are not installed
    assert "pip install 'voice-server[llm-qwen-0.5b]'" in message


def test_a_file_changed_after_it_was_checked_is_joined_again(tmp_path):
    parts = installed_or_skip(SMALL)
    path = models.join_parts(SMALL, parts, tmp_path)
    with open(path, "r+b") as handle:
        handle.seek(SMALL.size - 1)
        handle.write(b"\xff")
    again = models.join_parts(SMALL, parts, tmp_path)
    assert again == path
    assert path.stat().st_size == SMALL.size
    with open(path, "rb") as handle:
        handle.seek(SMALL.size - 1)
        assert handle.read(1) == parts[-1].read_bytes()[-1:]


def test_an_unknown_name_lists_the_named_models():
    with pytest.raises(models.ModelNotFoundError, match="qwen2.5-coder-0.5b"):
        models.gguf_model("qwen-does-not-exist")
