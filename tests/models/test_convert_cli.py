"""``convert``'s checks that need neither the convert extra nor llama.cpp's converter.

The conversion itself (and the errors the converter's own table decides) are tested by
``make test-convert`` (tests/models/convert/), which installs the extra.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from server.cli import main
from server.models.convert import architectures
from tests.conftest import REPO


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["convert", *args])
    return code, capsys.readouterr().err


def checkpoint(folder: Path, config: object = None, weights: bool = True) -> Path:
    folder.mkdir()
    if config is not None:
        (folder / "config.json").write_text(json.dumps(config))
    if weights:
        (folder / "model.safetensors").write_bytes(b"")
    return folder


LLAMA = {"architectures": ["LlamaForCausalLM"]}


@pytest.mark.parametrize(
    ("config", "weights", "message"),
    [
        (None, True, "is not a Hugging Face checkpoint: it has no config.json"),
        (LLAMA, False, "no weights (*.safetensors or pytorch_model.bin)"),
        ({"model_type": "llama"}, True, 'no "architectures" list'),
    ],
)
def test_a_folder_that_is_not_a_checkpoint_is_refused(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    config: object,
    weights: bool,
    message: str,
) -> None:
    folder = checkpoint(tmp_path / "hf", config, weights)
    code, err = run(capsys, str(folder), "-o", str(tmp_path / "out.gguf"))
    assert (code, message in err) == (2, True), err


def test_a_missing_folder_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run(capsys, str(tmp_path / "nope"), "-o", str(tmp_path / "out.gguf"))
    assert code == 2 and "is not a folder" in err


def test_invalid_json_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = checkpoint(tmp_path / "hf")
    (folder / "config.json").write_text("{not json")
    code, err = run(capsys, str(folder), "-o", str(tmp_path / "out.gguf"))
    assert code == 2 and "config.json is not valid JSON" in err


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("smollm2-135m", "already has a model named 'smollm2-135m'; choose another --name"),
        ("has/slash", "use letters, digits and . _ : -"),
    ],
)
def test_a_bad_name_is_refused_before_converting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, message: str
) -> None:
    """The config check comes first, so a bad name costs no conversion."""
    config = tmp_path / "config.json"
    config.write_bytes((REPO / "config.json").read_bytes())
    folder = checkpoint(tmp_path / "hf", LLAMA)
    out = tmp_path / "out.gguf"
    code, err = run(capsys, str(folder), "-o", str(out), "--name", name, "--config", str(config))
    assert (code, message in err) == (2, True), err
    assert "converting" not in err and config.read_bytes() == (REPO / "config.json").read_bytes()


def test_a_name_that_makes_the_config_invalid_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The new entry is validated as the server validates any config edit."""
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"models": {"a": {"path": "a.gguf", "context_size": 10}}}))
    folder = checkpoint(tmp_path / "hf", LLAMA)
    code, err = run(capsys, str(folder), "-o", str(tmp_path / "b.gguf"), "--name", "b",
                    "--config", str(config))  # fmt: skip
    assert code == 2
    assert f"--name b: config file {config}: models.a.context_size: must be at least 64" in err
    assert not list(tmp_path.glob(".config-*"))  # the trial file is gone


def test_the_architecture_is_read_as_the_converter_reads_it() -> None:
    text = {"architectures": ["LlavaForConditionalGeneration"],
            "text_config": {"architectures": ["LlamaForCausalLM"]}}  # fmt: skip
    assert architectures(text) == ["LlavaForConditionalGeneration", "LlamaForCausalLM"]
    assert architectures({"ssm_cfg": {"layer": "Mamba2"}}) == ["Mamba2ForCausalLM"]
    assert architectures({"architectures": []}) == []
