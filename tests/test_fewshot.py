"""Few labels: data.samples_per_class draws N training examples per class (stratified, seeded,
nested across sizes), keeping validation and test whole."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import write_csv

from nlp_transfer import ConfigError, load_data
from nlp_transfer.config import DataConfig
from nlp_transfer.data.sampling import per_class_sample


def _data(toy_csv, **kw):
    return load_data(DataConfig(source=None, train_file=str(toy_csv), validation_fraction=0.15, test_fraction=0.2, **kw))


def test_samples_per_class_draws_exactly_n_per_class_and_keeps_the_held_out_splits(toy_csv):
    whole = _data(toy_csv)
    few = _data(toy_csv, samples_per_class=8, sample_seed=3)
    assert np.bincount(few.splits["train"]["label"]).tolist() == [8, 8]
    assert few.splits["validation"]["text"] == whole.splits["validation"]["text"]
    assert few.splits["test"]["text"] == whole.splits["test"]["text"]
    assert set(few.splits["train"]["text"]) <= set(whole.splits["train"]["text"])
    assert few.summary()["label_counts"]["train"] == {"neg": 8, "pos": 8}


def test_the_draw_is_seed_stable_and_nested_across_sizes(toy_csv):
    a, b = (_data(toy_csv, samples_per_class=8, sample_seed=1) for _ in range(2))
    assert a.splits["train"]["text"] == b.splits["train"]["text"]  # same seed, same examples
    other = _data(toy_csv, samples_per_class=8, sample_seed=2)
    assert set(other.splits["train"]["text"]) != set(a.splits["train"]["text"])
    larger = _data(toy_csv, samples_per_class=32, sample_seed=1)
    assert set(a.splits["train"]["text"]) < set(larger.splits["train"]["text"])


def test_per_class_sample_keeps_the_original_order():
    y = np.array([0, 1, 0, 1, 0, 1, 0, 1, 2, 2])
    idx = per_class_sample(y, 2, seed=0, names=["a", "b", "c"])
    assert idx.tolist() == sorted(idx.tolist()) and np.bincount(y[idx]).tolist() == [2, 2, 2]


def test_a_class_with_fewer_examples_than_asked_is_one_line(toy_csv):
    with pytest.raises(ConfigError, match=r"data.samples_per_class=500 but class 'neg' has only \d+ training examples; use at most"):
        _data(toy_csv, samples_per_class=500)
    with pytest.raises(ConfigError, match="must be at least 1"):
        DataConfig(samples_per_class=0)


def test_samples_per_class_needs_single_label_data(tmp_path):
    rows = [(f"text number {i}", f"{i % 7}.{i % 3}5") for i in range(60)]
    path = write_csv(tmp_path / "scores.csv", rows, header=("text", "score"))
    with pytest.raises(ConfigError, match="needs single-label data, but this is regression data; use data.max_samples"):
        load_data(DataConfig(source=None, train_file=str(path), label_column="score", task="regression", samples_per_class=4))


# ---- setfit: the encoder tuned on contrastive pairs, then a logistic-regression head -------------------
SETFIT = (
    "transfer.mode=setfit",
    "model.head=logreg",
    "data.samples_per_class=8",
    "train.epochs=2",
    "train.lr=1e-3",
    "transfer.setfit.num_iterations=5",
)


def test_setfit_trains_the_encoder_on_pairs_and_its_run_reloads_to_the_same_labels(make_cfg, tmp_path, monkeypatch):
    import importlib

    import torch
    from safetensors.torch import load_file

    from nlp_transfer import load_run, train

    trainer = importlib.import_module("nlp_transfer.training.trainer")
    kept, original = {}, trainer.build_classifier
    monkeypatch.setattr(trainer, "build_classifier", lambda cfg, labels: kept.setdefault("m", original(cfg, labels)))
    cfg = make_cfg(tmp_path, *SETFIT)
    result = train(cfg, progress=False)
    pairs = result.timing["cache"]["pairs"]
    assert pairs == {"total": 2 * 5 * 16, "positive": 5 * 16, "negative": 5 * 16, "seconds": pairs["seconds"]}
    assert len(result.history) == 2 and all(np.isfinite(e["train_loss"]) for e in result.history)
    assert all(e["validation"]["logreg_C"] in (0.01, 0.1, 1.0, 10.0, 100.0) for e in result.history)
    # The encoder moved (contrastive training), unlike feature extraction.
    before = load_file(str(Path(cfg.model.name_or_path) / "model.safetensors"))
    after = load_file(str(result.output_dir / "model.safetensors"))
    assert not torch.equal(after["encoder.layer.0.attention.self.query.weight"], before["encoder.layer.0.attention.self.query.weight"])

    data = load_data(cfg.data)
    texts = list(data.splits["test"]["text"])
    predictor = load_run(result.output_dir)
    model, tok = kept["m"]
    model.eval()
    with torch.no_grad():
        live = model(**tok(texts, padding=True, return_tensors="pt"))["logits"].argmax(-1).tolist()
    assert list(predictor.predict(texts)) == [data.labels[i] for i in live]
    labels = [data.labels[i] for i in data.splits["test"]["label"]]
    assert predictor.evaluate(texts, labels).metrics["accuracy"] == pytest.approx(result.test["accuracy"])


def test_the_contrastive_loss_is_the_mse_of_cosine_similarities(make_cfg, tmp_path):
    import torch

    from nlp_transfer.recipes import build_classifier
    from nlp_transfer.training.objectives import ContrastivePairs

    model, tok = build_classifier(make_cfg(tmp_path, *SETFIT), ["neg", "pos"])
    model.eval()
    batch = dict(tok(["good film", "a dull plot", "superb", "boring"], padding=True, return_tensors="pt"))
    batch["labels"] = torch.tensor([1.0, 0.0])  # pairs (good film, superb) and (a dull plot, boring)
    loss, reported = ContrastivePairs("accuracy", ["neg", "pos"], None, 0).loss(model, dict(batch))
    with torch.no_grad():
        e = model.encode(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        cos = torch.nn.functional.cosine_similarity(e[:2], e[2:])
    assert loss.item() == pytest.approx(((cos - torch.tensor([1.0, 0.0])) ** 2).mean().item(), rel=1e-5)
    assert reported is loss


def test_contrastive_pairs_come_from_setfits_sampler():
    from nlp_transfer.training.inputs import contrastive_pairs

    labels = [0, 0, 1, 1, 1, 2]
    pairs = contrastive_pairs(labels, num_iterations=3, sampling="oversampling")
    assert len(pairs) == 2 * 3 * len(labels)
    assert all((labels[p["sentence_1"]] == labels[p["sentence_2"]]) == (p["label"] == 1.0) for p in pairs)
    assert sum(p["label"] for p in pairs) == 3 * len(labels)


@pytest.mark.parametrize(
    "overrides, match",
    [
        (("transfer.mode=setfit",), "setfit fits a logistic-regression head on the tuned embeddings; set model.head=logreg"),
        (("transfer.mode=setfit", "model.head=logreg", "train.save_checkpoints=true"), "without checkpoints"),
        (("transfer.mode=setfit", "model.head=logreg", "model.chunking=true", "model.chunk_stride=4"), "compares whole texts"),
        (("transfer.mode=full", "transfer.setfit.num_iterations=5"), "transfer.setfit configures transfer.mode=setfit"),
    ],
)
def test_setfit_recipes_that_cannot_work_fail_in_one_line(make_cfg, tmp_path, overrides, match):
    with pytest.raises(ConfigError, match=match):
        make_cfg(tmp_path, *overrides)


def test_setfit_refuses_multi_label_data_in_one_line(tmp_path, tiny_bert_dir):
    import json

    from conftest import build_cfg

    from nlp_transfer import train

    p = tmp_path / "multi.jsonl"
    p.write_text(
        "\n".join(json.dumps({"text": f"good film {i}" if i % 2 else f"bad plot {i}", "label": ["a", "b"][: 1 + i % 2]}) for i in range(60))
        + "\n"
    )
    cfg = build_cfg(tmp_path, tiny_bert_dir, p, "transfer.mode=setfit", "model.head=logreg")
    with pytest.raises(ConfigError, match="logreg fits a single-label logistic regression, but the data is multi_label"):
        train(cfg, progress=False)
    assert not Path(cfg.output.dir).exists()


# ---- zero-shot: a decoder's next-token probabilities of the label words -----------------------------
@pytest.fixture(scope="module", params=[True, False], ids=["tied", "untied"])
def causal_lm_dir(request, tmp_path_factory):
    """A tiny Llama saved as a causal language model, its output embeddings tied to the input ones or not."""
    import torch
    from conftest import SPECIALS, WORDS, save_tokenizer
    from transformers import LlamaConfig, LlamaForCausalLM

    d = tmp_path_factory.mktemp("causal-lm")
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(SPECIALS + WORDS),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=64,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=request.param,
    )
    LlamaForCausalLM(config).eval().save_pretrained(d)
    save_tokenizer(d, bos=True, eos=True, padding_side="left")
    return d


ZERO_SHOT = (
    "transfer.mode=zero_shot",
    "model.pooling=auto",
    "model.prompt=the {text} film was",
    "model.label_words={neg: ' bad', pos: ' good'}",
    "model.calibration_text=null",
)


def test_zero_shot_scores_equal_the_language_models_next_token_logits(tmp_path, causal_lm_dir, toy_csv):
    import torch
    from conftest import build_cfg
    from transformers import AutoModelForCausalLM

    from nlp_transfer import load_run, train

    cfg = build_cfg(tmp_path, causal_lm_dir, toy_csv, *ZERO_SHOT)
    result = train(cfg, progress=False)
    assert result.parameters["trainable"] == 0 and result.history[0]["train_loss"] is None
    words = result.history[0]["zero_shot"]["label_words"]
    assert {k: v["token"] for k, v in words.items()} == {"neg": "bad", "pos": "good"}

    predictor = load_run(result.output_dir)
    texts = ["good fun", "a dull plot and a bad ending", "superb"]
    got = predictor.logits(texts)
    lm = AutoModelForCausalLM.from_pretrained(str(causal_lm_dir)).eval()
    tok = predictor.tokenizer
    for text, row in zip(texts, got):
        ids = tok("the " + text + " film was")["input_ids"]  # the prompt around the text, BOS first
        with torch.no_grad():
            next_token = lm(torch.tensor([ids])).logits[0, -1]
        expected = next_token[[words["neg"]["id"], words["pos"]["id"]]].numpy()
        np.testing.assert_allclose(row, expected, atol=1e-5, rtol=1e-5)
    data = load_data(cfg.data)
    labels = [data.labels[i] for i in data.splits["test"]["label"]]
    assert predictor.evaluate(list(data.splits["test"]["text"]), labels).metrics["accuracy"] == pytest.approx(result.test["accuracy"])


def test_calibration_subtracts_the_scores_of_the_content_free_input(tmp_path, causal_lm_dir, toy_csv):
    import torch
    from conftest import build_cfg
    from transformers import AutoModelForCausalLM

    from nlp_transfer import load_run, train

    plain = load_run(train(build_cfg(tmp_path / "plain", causal_lm_dir, toy_csv, *ZERO_SHOT), progress=False).output_dir)
    result = train(build_cfg(tmp_path / "cal", causal_lm_dir, toy_csv, *ZERO_SHOT[:-1], "model.calibration_text=plot"), progress=False)
    calibrated = load_run(result.output_dir)
    lm = AutoModelForCausalLM.from_pretrained(str(causal_lm_dir)).eval()
    words = result.history[0]["zero_shot"]["label_words"]
    ids = [words["neg"]["id"], words["pos"]["id"]]
    with torch.no_grad():
        content_free = lm(torch.tensor([calibrated.tokenizer("the plot film was")["input_ids"]])).logits[0, -1, ids].numpy()
    assert result.history[0]["zero_shot"]["calibration"] == pytest.approx(dict(zip(["neg", "pos"], content_free.tolist())), abs=1e-4)
    texts = ["good fun", "a dull plot"]
    np.testing.assert_allclose(calibrated.logits(texts), plain.logits(texts) - content_free, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(calibrated.logits(["plot"])[0], [0.0, 0.0], atol=1e-5)  # the content-free input: no preference


def test_a_long_text_is_cut_inside_the_prompt():
    import tempfile

    from conftest import save_tokenizer
    from transformers import AutoTokenizer

    from nlp_transfer.data.chunking import LongTextSpec, encode

    d = Path(tempfile.mkdtemp())
    save_tokenizer(d, bos=True, eos=True)
    tok = AutoTokenizer.from_pretrained(str(d))
    enc = encode(tok, ["good", "a very dull plot and a bad ending"], None, LongTextSpec(8, prompt="the {text} film"))
    rows = [tok.convert_ids_to_tokens(ids) for ids in enc["input_ids"]]
    assert rows == [["<s>", "the", "good", "film"], ["<s>", "the", "a", "very", "dull", "plot", "and", "film"]]


@pytest.mark.parametrize(
    "overrides, match",
    [
        (("transfer.mode=zero_shot",), "asks the model to continue a prompt; set model.prompt"),
        (("transfer.mode=zero_shot", "model.prompt=no text here"), "must contain {text} exactly once"),
        (("transfer.mode=zero_shot", "model.prompt={text}:", "model.pooling=mean"), "set model.pooling=auto"),
        (("transfer.mode=full", "model.label_words={neg: bad}"), "model.label_words is for transfer.mode=zero_shot"),
        (("transfer.mode=full", "model.calibration_text=null"), "model.calibration_text is for transfer.mode=zero_shot"),
    ],
)
def test_zero_shot_recipes_that_cannot_work_fail_in_one_line(make_cfg, tmp_path, overrides, match):
    with pytest.raises(ConfigError, match=match):
        make_cfg(tmp_path, *overrides)


@pytest.mark.parametrize(
    "words, match",
    [
        ("{neg: ' good', pos: ' good'}", "the words for 'neg' and 'pos' start with the same token 'good'"),
        ("{negative: ' bad'}", "model.label_words names 'negative', which the data does not have"),
    ],
)
def test_label_words_that_cannot_be_told_apart_fail_in_one_line(tmp_path, causal_lm_dir, toy_csv, words, match):
    from conftest import build_cfg

    from nlp_transfer import train

    cfg = build_cfg(tmp_path, causal_lm_dir, toy_csv, *ZERO_SHOT[:3], f"model.label_words={words}", "model.calibration_text=null")
    with pytest.raises(ConfigError, match=match):
        train(cfg, progress=False)


def test_zero_shot_needs_a_decoder(make_cfg, tmp_path):
    from nlp_transfer import train

    with pytest.raises(ConfigError, match="needs a decoder"):
        train(make_cfg(tmp_path, "transfer.mode=zero_shot", "model.prompt={text} is", "model.pooling=auto"), progress=False)


# ---- label-efficiency curves -----------------------------------------------------------------------
def test_a_curve_trains_each_point_once_and_resumes_after_an_interruption(make_cfg, tmp_path, monkeypatch):
    import nlp_transfer.training
    from nlp_transfer.experiments.curve import curve

    recipe = tmp_path / "probe.yaml"
    recipe.write_text(make_cfg(tmp_path, "transfer.mode=feature_extraction", "model.head=logreg", name="probe").to_yaml())
    calls = []
    real = nlp_transfer.training.train

    def counting(cfg, data=None, progress=True):
        calls.append((cfg.data.samples_per_class, cfg.data.sample_seed, len(data.splits["train"])))
        return real(cfg, data=data, progress=progress)

    monkeypatch.setattr(nlp_transfer.training, "train", counting)
    runs = tmp_path / "curve"
    first = curve([str(recipe)], per_class=[4, 8, None], seeds=2, runs_dir=runs)
    assert calls == [(4, 0, 8), (4, 1, 8), (8, 0, 16), (8, 1, 16), (None, 0, 260)]
    assert {(p["method"], p["per_class"], p["seed"]) for p in first.points} >= {
        ("TF-IDF + logistic regression", 4, 1),
        ("TF-IDF + logistic regression", None, 0),
    }
    assert (runs / "curve.md").is_file() and (runs / "curve.json").is_file() and (runs / "curve.png").is_file()
    assert not list(runs.rglob("model.safetensors"))  # metrics kept, weights not (--keep-models keeps them)

    # Interrupted: one point lost (e.g. killed while it trained). Only that one trains again.
    lost = next(runs.glob("*frozen*/8/seed-1"))
    shutil.rmtree(lost)
    calls.clear()
    again = curve([str(recipe)], per_class=[4, 8, None], seeds=2, runs_dir=runs)
    assert calls == [(8, 1, 16)]
    assert [p for p in again.points if p["per_class"] != 8 or p["seed"] != 1] == [
        p for p in first.points if p["per_class"] != 8 or p["seed"] != 1
    ]
    row = next(r for r in again.summary if r["per_class"] == 4 and r["method"].startswith("TF-IDF"))
    accs = [p["accuracy"] for p in again.points if p["per_class"] == 4 and p["method"].startswith("TF-IDF")]
    assert row["seeds"] == 2 and row["accuracy"] == pytest.approx(np.mean(accs))
    assert row["accuracy_std"] == pytest.approx(np.std(accs, ddof=1))
    assert "95% of full data at" in again.table and "± " in again.table

    # A point is reused only for the same recipe: a changed recipe trains its points again.
    recipe.write_text(
        make_cfg(tmp_path, "transfer.mode=feature_extraction", "model.head=logreg", "model.logreg_c=1.0", name="probe").to_yaml()
    )
    calls.clear()
    curve([str(recipe)], per_class=[4], seeds=1, runs_dir=runs)
    assert calls == [(4, 0, 8)]


def test_curve_sizes_of_256_and_more_use_at_most_three_seeds():
    from nlp_transfer.experiments.curve import seeds_for, summarize

    assert seeds_for(8, 5) == [0, 1, 2, 3, 4] and seeds_for(256, 5) == [0, 1, 2] and seeds_for(None, 5) == [0]
    points = [
        {"method": "m", "per_class": n, "seed": 0, "train_size": 2 * (n or 100), "accuracy": a, "f1_macro": a, "seconds": 1.0}
        for n, a in ((8, 0.70), (16, 0.80), (32, 0.86), (None, 0.90))
    ]
    assert {r["reaches_target_at"] for r in summarize(points)} == {32}  # 0.95 * 0.90 = 0.855


def test_a_prompted_text_gets_the_tokens_of_the_whole_prompt_under_byte_level_bpe():
    """GPT-2-style tokenizers mark a word's leading space inside its token: the text is tokenized with the space
    before it, so the prompt built from parts equals the prompt tokenized at once."""
    from conftest import toy_rows
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from nlp_transfer.data.chunking import LongTextSpec, encode

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    corpus = [t for t, _ in toy_rows(300)] + ["Movie review: a film. Is this review positive or negative? Answer: positive"]
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe)
    prompt = "Movie review: {text}\nIs this review positive or negative? Answer:"
    texts = ["a gorgeous, moving film", "the plot was dull"]
    enc = encode(tok, texts, None, LongTextSpec(64, prompt=prompt))
    assert enc["input_ids"] == [tok(prompt.replace("{text}", t))["input_ids"] for t in texts]
