"""Long documents (truncation strategies, sliding windows, per-document aggregation), sentence
pairs, and class imbalance (class weights, weighted sampler), on the tiny random BERT.

Every toy word is one token (see conftest), so expected token ids are written down directly.
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from conftest import FILLER, VOCAB, build_cfg, free_port, toy_rows, write_csv

from nlp_transfer import RecipeConfig, load_data, load_run, train
from nlp_transfer.data.batching import LengthGroupedBatchSampler, tokenize
from nlp_transfer.data.chunking import LongTextSpec, aggregate, encode, pair_budget, per_document, window_starts
from nlp_transfer.data.sampling import class_weights, sampling_weights
from nlp_transfer.errors import ConfigError
from nlp_transfer.transfer.caches import fingerprint_tokens

CLS, SEP = VOCAB.index("[CLS]"), VOCAB.index("[SEP]")
WORDS = FILLER[:20]
IDS = [VOCAB.index(w) for w in WORDS]  # the ids of "the a an this ..." in order
LONG = " ".join(WORDS)


@pytest.fixture(scope="module")
def tok(tiny_bert_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_bert_dir))


# ---- truncation strategies ------------------------------------------------------------------
@pytest.mark.parametrize(
    "how, kept",
    [
        ("head", IDS[:8]),
        ("tail", IDS[-8:]),
        ("head+tail", IDS[:2] + IDS[-6:]),  # 1/4 of the 8-token budget from the start, 3/4 from the end
    ],
)
def test_truncation_strategies_keep_the_expected_tokens(tok, how, kept):
    enc = encode(tok, [LONG], None, LongTextSpec(10, how))
    assert enc["input_ids"] == [[CLS] + kept + [SEP]]
    assert enc["token_type_ids"] == [[0] * 10] and enc["attention_mask"] == [[1] * 10]


def test_head_fraction_is_configurable(tok):
    enc = encode(tok, [LONG], None, LongTextSpec(10, "head+tail", head_fraction=0.5))
    assert enc["input_ids"] == [[CLS] + IDS[:4] + IDS[-4:] + [SEP]]


@pytest.mark.parametrize("pairs", [None, ["good plot", "bad ending twist"]])
def test_special_token_template_matches_the_tokenizer_on_short_texts(tok, pairs):
    """Texts that fit: the template path (tail) builds exactly what the tokenizer builds."""
    texts = ["the film was good", "a dull story"]
    enc = encode(tok, texts, pairs, LongTextSpec(32, "tail"))
    ref = tok(texts, pairs)
    for key in ("input_ids", "token_type_ids", "attention_mask"):
        assert enc[key] == ref[key], key


def test_head_truncation_of_pairs_matches_the_tokenizer(tok):
    rng = random.Random(0)
    for _ in range(100):
        na, nb, max_length = rng.randint(1, 30), rng.randint(1, 30), rng.randint(8, 40)
        ids = tok(" ".join(["good"] * na), " ".join(["bad"] * nb), truncation=True, max_length=max_length)["input_ids"]
        kept = (ids.count(VOCAB.index("good")), ids.count(VOCAB.index("bad")))
        assert kept == pair_budget(na, nb, max_length - 3), (na, nb, max_length)


def test_tail_truncation_of_a_pair(tok):
    enc = encode(tok, [LONG], ["good bad"], LongTextSpec(12, "tail"))
    good, bad = VOCAB.index("good"), VOCAB.index("bad")
    assert enc["input_ids"] == [[CLS] + IDS[-7:] + [SEP, good, bad, SEP]]
    assert enc["token_type_ids"] == [[0] * 9 + [1] * 3]


def test_decoder_template_with_a_bos_token(tmp_path):
    from conftest import save_tokenizer
    from transformers import AutoTokenizer

    save_tokenizer(tmp_path, bos=True, eos=True)
    t = AutoTokenizer.from_pretrained(str(tmp_path))
    bos = t.convert_tokens_to_ids("<s>")
    ids = t(WORDS, is_split_into_words=False, add_special_tokens=False)["input_ids"]
    enc = encode(t, [LONG], None, LongTextSpec(9, "tail"))
    assert enc["input_ids"] == [[bos] + [i[0] for i in ids[-8:]]]


# ---- sliding windows ------------------------------------------------------------------------
def test_window_starts():
    assert window_starts(20, 8, 2) == [0, 6, 12]  # the last window ends exactly at the last token
    assert window_starts(21, 8, 2) == [0, 6, 12, 18]
    assert window_starts(5, 8, 2) == [0]
    assert window_starts(21, 8, 2, max_chunks=2) == [0, 6]
    assert window_starts(16, 8, 0) == [0, 8]


def test_chunking_produces_overlapping_windows_with_special_tokens(tok):
    enc = encode(tok, ["good bad", LONG], None, LongTextSpec(10, chunking=True, chunk_stride=2))
    assert enc["input_ids"] == [
        [CLS, VOCAB.index("good"), VOCAB.index("bad"), SEP],
        [CLS] + IDS[0:8] + [SEP],
        [CLS] + IDS[6:14] + [SEP],
        [CLS] + IDS[12:20] + [SEP],
    ]
    assert enc["doc_id"] == [0, 1, 1, 1]
    capped = encode(tok, [LONG], None, LongTextSpec(10, chunking=True, chunk_stride=2, max_chunks=2))
    assert capped["input_ids"] == enc["input_ids"][1:3]


def test_chunking_a_pair_repeats_the_second_text_in_every_window(tok):
    enc = encode(tok, [LONG], ["good bad"], LongTextSpec(12, chunking=True, chunk_stride=1))
    pair = [VOCAB.index("good"), VOCAB.index("bad"), SEP]
    # budget 12 - 3 specials = 9: the pair's 2 tokens, windows of 7 first-text tokens
    assert enc["input_ids"] == [[CLS] + IDS[s : s + 7] + [SEP] + pair for s in (0, 6, 12, 18)]
    assert all(t == [0] * 9 + [1] * 3 for t in enc["token_type_ids"][:3])


def test_tokenize_gives_windows_the_document_label_and_index(tmp_path, tok):
    path = write_csv(tmp_path / "d.csv", [("good bad", "pos"), (LONG, "neg"), ("dull", "neg"), ("fine", "pos")] * 5)
    data = load_data(load_cfg(path).data)
    tokens = tokenize(data.splits, tok, 10, LongTextSpec(10, chunking=True, chunk_stride=2))
    for split, ds in data.splits.items():
        t = tokens[split]
        n_windows = [3 if text == LONG else 1 for text in ds["text"]]
        assert len(t) == sum(n_windows)
        assert t["doc_id"] == [d for d, n in enumerate(n_windows) for _ in range(n)]
        assert t["labels"] == [ds["label"][d] for d in t["doc_id"]]


def load_cfg(path):
    return RecipeConfig.from_dict({"data": {"source": str(path), "validation_fraction": 0.2, "test_fraction": 0.2}})


# ---- aggregation ----------------------------------------------------------------------------
def test_chunk_aggregation_equals_hand_computed_mean_and_max():
    logits = torch.tensor([[1.0, 5.0], [3.0, -1.0], [0.0, 2.0], [4.0, 4.0], [-2.0, 6.0]])
    docs = torch.tensor([7, 3, 7, 3, 7])
    ids, mean = aggregate(logits, docs, "mean")
    assert ids.tolist() == [3, 7]
    assert torch.allclose(mean, torch.tensor([[3.5, 1.5], [-1 / 3, 13 / 3]]))
    _, mx = aggregate(logits, docs, "max")
    assert torch.equal(mx, torch.tensor([[4.0, 4.0], [1.0, 6.0]]))
    y = torch.tensor([1, 0, 1, 0, 1])
    doc_logits, doc_y = per_document(logits, y, docs, "mean")
    assert doc_y.tolist() == [0, 1] and torch.equal(doc_logits, mean)


# ---- training and prediction with windows -----------------------------------------------------
def long_rows(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """Toy documents of 2 to 4 sentences: long enough for several 16-token windows."""
    rng = random.Random(seed)
    rows = toy_rows(4 * n, seed)
    out = []
    for i in range(n):
        label = ("neg", "pos")[i % 2]
        parts = [t for t, lab in rows[4 * i : 4 * i + 4] if lab == label] or [rows[4 * i][0]]
        out.append((" and ".join(parts * rng.randint(1, 2)), label))
    return out


@pytest.fixture(scope="module")
def long_csv(tmp_path_factory):
    return write_csv(tmp_path_factory.mktemp("long") / "long.csv", long_rows(160))


@pytest.fixture(scope="module")
def chunked_run(tmp_path_factory, tiny_bert_dir, long_csv):
    tmp = tmp_path_factory.mktemp("chunked")
    cfg = build_cfg(tmp, tiny_bert_dir, long_csv, "model.max_length=16", "model.chunking=true", "model.chunk_stride=4", "train.epochs=2")
    return cfg, train(cfg, progress=False)


def test_chunked_run_counts_documents_and_reloads_to_the_same_metrics(chunked_run):
    cfg, result = chunked_run
    data = load_data(cfg.data)
    metrics = json.loads((result.output_dir / "metrics.json").read_text())
    n_test = len(data.splits["test"])
    assert result.test["num_examples"] == n_test  # documents, not windows
    assert result.test["num_windows"] == metrics["setup"]["windows"]["test"] > n_test
    predictor = load_run(result.output_dir)
    assert predictor.spec.chunking and predictor.spec.chunk_stride == 4  # saved with the run
    test = data.splits["test"]
    ev = predictor.evaluate(test["text"], [data.labels[i] for i in test["label"]])
    assert ev.metrics["confusion_matrix"] == result.test["confusion_matrix"]
    assert ev.metrics["loss"] == pytest.approx(result.test["loss"], rel=1e-5)


@pytest.mark.parametrize("how", ["mean", "max"])
def test_prediction_aggregates_each_window_scored_alone(chunked_run, tok, how):
    cfg, result = chunked_run
    predictor = load_run(result.output_dir)
    predictor.spec = LongTextSpec(16, chunking=True, chunk_stride=4, chunk_aggregate=how)
    texts = [LONG, "good", "the film was dull and the plot was poor and the ending was lazy and stale"]
    got = predictor.predict(texts).logits
    enc = encode(tok, texts, None, predictor.spec)
    window_logits = []
    with torch.no_grad():
        for i in range(len(enc["input_ids"])):
            one = {k: torch.tensor([enc[k][i]]) for k in ("input_ids", "token_type_ids", "attention_mask")}
            window_logits.append(predictor.model(**one)["logits"][0])
    doc = np.array(enc["doc_id"])
    assert (doc == 0).sum() == 2 and (doc == 1).sum() == 1  # 20 tokens: windows 0-13 and 10-19
    for d in range(len(texts)):
        rows = torch.stack([window_logits[i] for i in np.flatnonzero(doc == d)])
        hand = rows.mean(0) if how == "mean" else rows.max(0).values
        assert np.allclose(got[d], hand.numpy(), atol=1e-5)


@pytest.mark.parametrize("mode, head", [("feature_extraction", "linear"), ("feature_extraction", "logreg"), ("partial", "linear")])
def test_frozen_caches_work_with_windows(tmp_path, tiny_bert_dir, long_csv, mode, head):
    cfg = build_cfg(
        tmp_path,
        tiny_bert_dir,
        long_csv,
        "model.max_length=16",
        "model.chunking=true",
        "model.chunk_stride=4",
        f"transfer.mode={mode}",
        f"model.head={head}",
        "transfer.unfreeze_top=1",
        "train.epochs=2",
        "model.chunk_aggregate=max",
    )
    result = train(cfg, progress=False)
    data = load_data(cfg.data)
    assert result.test["num_examples"] == len(data.splits["test"]) < result.test["num_windows"]
    assert result.validation["num_examples"] == len(data.splits["validation"])
    if mode == "feature_extraction":
        stats = result.timing["cache"]["features"]
        assert sorted(stats["misses"] + stats["hits"]) == ["test", "train", "validation"]
    else:
        assert result.timing["cache"]["prefix"]["first_trained_layer"] == 1


def test_truncation_changes_the_feature_cache_key(tmp_path, tok):
    path = write_csv(tmp_path / "d.csv", [(LONG, "pos"), ("good", "neg")] * 10)
    data = load_data(load_cfg(path).data)
    keys = {
        how: fingerprint_tokens(tokenize(data.splits, tok, 10, LongTextSpec(10, how))["train"]) for how in ("head", "tail", "head+tail")
    }
    assert len(set(keys.values())) == 3


# ---- sentence pairs -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pair_csv(tmp_path_factory):
    """The label is decided by the second text; the first is filler."""
    rng = random.Random(1)
    rows = [(" ".join(rng.choices(FILLER, k=5)), t, lab) for t, lab in toy_rows(300, seed=3)]
    return write_csv(tmp_path_factory.mktemp("pairs") / "pairs.csv", rows, header=("premise", "hypothesis", "label"))


def test_sentence_pairs_train_predict_and_reload(tmp_path, tiny_bert_dir, pair_csv, tok):
    cfg = build_cfg(tmp_path, tiny_bert_dir, pair_csv, "data.text_column=premise", "data.text_pair_column=hypothesis", "train.epochs=4")
    result = train(cfg, progress=False)
    assert result.test["accuracy"] > 0.8  # only the pair carries the label: it was used
    data = load_data(cfg.data)
    test = data.splits["test"]
    predictor = load_run(result.output_dir)
    ev = predictor.evaluate(test["text"], [data.labels[i] for i in test["label"]], text_pairs=test["text_pair"])
    assert ev.metrics["confusion_matrix"] == result.test["confusion_matrix"]
    # tokenized as a pair: the second text has token type 1
    text, pair = test["text"][0], test["text_pair"][0]
    enc = tok(text, pair)
    assert enc["token_type_ids"][-1] == 1
    one = {k: torch.tensor([v]) for k, v in enc.items()}
    with torch.no_grad():
        ref = predictor.model(**one)["logits"][0].numpy()
    assert np.allclose(predictor.predict([text], text_pairs=[pair]).logits[0], ref, atol=1e-5)


def test_the_pair_is_part_of_the_feature_cache_key(tmp_path, tok):
    rows = [("the film", "good", "pos"), ("the plot", "bad", "neg")] * 10
    a = write_csv(tmp_path / "a.csv", rows, header=("text", "second", "label"))
    b = write_csv(tmp_path / "b.csv", [(t, "dull", lab) for t, _, lab in rows], header=("text", "second", "label"))
    fps = []
    for path in (a, b):
        cfg = RecipeConfig.from_dict({"data": {"source": str(path), "text_pair_column": "second"}})
        fps.append(fingerprint_tokens(tokenize(load_data(cfg.data).splits, tok, 16)["train"]))
    assert fps[0] != fps[1]


def test_predict_cli_reads_a_pair_column(tmp_path, tiny_bert_dir, pair_csv):
    import subprocess
    import sys

    from conftest import REPO

    cfg = build_cfg(tmp_path, tiny_bert_dir, pair_csv, "data.text_column=premise", "data.text_pair_column=hypothesis", "train.epochs=1")
    result = train(cfg, progress=False)
    inp = write_csv(tmp_path / "in.csv", [("the film", "good superb"), ("the film", "awful dull")], header=("p", "h"))
    out = tmp_path / "out.csv"
    proc = subprocess.run(
        [
            sys.executable,
            "scripts/predict.py",
            str(result.output_dir),
            str(inp),
            "--text-column",
            "p",
            "--text-pair-column",
            "h",
            "-o",
            str(out),
            "--no-progress",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    import pandas as pd

    got = pd.read_csv(out)
    expected = load_run(result.output_dir).predict(["the film", "the film"], text_pairs=["good superb", "awful dull"])
    assert got["label"].tolist() == list(expected) and list(got["h"]) == ["good superb", "awful dull"]


# ---- class imbalance ------------------------------------------------------------------------
def test_balanced_class_weights_follow_the_sklearn_formula():
    y = [0] * 6 + [1] * 3 + [2] * 1
    assert class_weights("balanced", ["a", "b", "c"], y) == pytest.approx([10 / 18, 10 / 9, 10 / 3])
    assert class_weights([1, 2, 0.5], ["a", "b", "c"], y) == [1.0, 2.0, 0.5]
    assert class_weights(None, ["a", "b", "c"], y) is None
    assert class_weights("balanced", ["a", "b", "c"], [0, 0, 1]) == pytest.approx([0.5, 1.0, 0.0])  # c never seen
    with pytest.raises(ConfigError, match=r"has 2 values but the data has 3 labels; give 3 weights in this label order: a, b, c"):
        class_weights([1, 2], ["a", "b", "c"], y)


def test_class_weights_change_the_loss_as_hand_computed(tiny_bert_dir):
    from nlp_transfer.config import ModelConfig
    from nlp_transfer.recipes import build_encoder_classifier

    torch.manual_seed(0)
    model, _ = build_encoder_classifier(ModelConfig(name_or_path=str(tiny_bert_dir), head_dropout=0.0, max_length=64), ["a", "b", "c"])
    model.eval()
    features = torch.randn(5, 32)
    y = torch.tensor([0, 0, 1, 2, 2])
    plain = model(features=features, labels=y)["loss"]
    logits = model(features=features)["logits"]
    nll = -torch.log_softmax(logits, -1)[torch.arange(5), y]
    assert plain.item() == pytest.approx(nll.mean().item(), rel=1e-5)
    w = torch.tensor([0.5, 2.0, 1.0])
    model.set_class_weights(w.tolist())
    weighted = model(features=features, labels=y)["loss"]
    assert weighted.item() == pytest.approx(((w[y] * nll).sum() / w[y].sum()).item(), rel=1e-5)
    assert weighted.item() != pytest.approx(plain.item(), rel=1e-3)
    assert "class_weights" not in model.state_dict()  # shapes training only; not saved with the model


def imbalanced_csv(path, n_pos=240, n_neg=40):
    rows = [r for r in toy_rows(2 * n_pos + 200, seed=5)]
    pos = [r for r in rows if r[1] == "pos"][:n_pos]
    neg = [r for r in rows if r[1] == "neg"][:n_neg]
    return write_csv(path, pos + neg)


def test_balanced_weights_are_recorded_in_metrics_json(tmp_path, tiny_bert_dir):
    path = imbalanced_csv(tmp_path / "imb.csv")
    cfg = build_cfg(
        tmp_path,
        tiny_bert_dir,
        path,
        "train.class_weights=balanced",
        "train.epochs=1",
        "train.sampler=weighted",
        "train.metric_for_best=recall_macro",
    )
    result = train(cfg, progress=False)
    metrics = json.loads((result.output_dir / "metrics.json").read_text())
    y = load_data(cfg.data).splits["train"]["label"]
    counts = np.bincount(y)
    expected = {"neg": len(y) / (2 * counts[0]), "pos": len(y) / (2 * counts[1])}
    assert metrics["setup"]["class_weights"] == pytest.approx(expected)
    assert metrics["setup"]["sampler"] == "weighted" and metrics["metric_for_best"] == "recall_macro"
    summary = (result.output_dir / "summary.md").read_text()
    assert f"- class balance: balanced class weights, weighted sampler (neg {expected['neg']:.3f}, pos {expected['pos']:.3f})" in summary


def test_weighted_sampler_draws_classes_equally_and_keeps_length_grouping():
    rng = np.random.default_rng(0)
    y = np.array([0] * 900 + [1] * 100)
    lengths = rng.integers(5, 100, size=1000)
    w = sampling_weights(y)
    assert w[0] == pytest.approx(1 / 1800) and w[-1] == pytest.approx(1 / 200)
    grouped = LengthGroupedBatchSampler(lengths, 10, shuffle=True, seed=1, group=True, weights=w)
    plain = LengthGroupedBatchSampler(lengths, 10, shuffle=True, seed=1, group=False, weights=w)
    drawn = []
    for epoch in range(5):
        grouped.set_epoch(epoch)
        plain.set_epoch(epoch)
        g = [i for b in grouped for i in b]
        assert len(g) == 1000
        assert sorted(g) == sorted(i for b in plain for i in b)  # grouping reorders, never redraws
        drawn += g
    share = (y[drawn] == 1).mean()
    assert 0.47 < share < 0.53  # 10% of the data, half the draws
    batches = list(grouped)
    spread = np.mean([np.ptp(lengths[b]) for b in batches])
    assert spread < 10  # batches of similar lengths (random batches would spread ~85)


# ---- config ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "override, words",
    [
        ("model.truncation=middle", ["model.truncation='middle'", "head, tail, head+tail"]),
        ("train.class_weights=heavy", ["train.class_weights='heavy'", "balanced"]),
        ("train.class_weights=[1,-2]", ["non-negative"]),
        ("model.chunking=true model.chunk_stride=200", ["model.chunk_stride=200", "half of model.max_length"]),
        ("train.sampler=weigthed", ["did you mean 'weighted'"]),
    ],
)
def test_bad_settings_are_one_line_errors(override, words):
    with pytest.raises(ConfigError) as e:
        RecipeConfig().replace(*override.split(" "))
    for w in words:
        assert w in str(e.value)
    assert "\n" not in str(e.value)


def test_chunking_with_a_truncation_strategy_is_refused():
    with pytest.raises(ConfigError, match="model.truncation=head"):
        RecipeConfig().replace("model.chunking=true", "model.truncation=tail")


# ---- reports --------------------------------------------------------------------------------
def test_reports_name_the_windows_and_the_recall_column(chunked_run):
    from nlp_transfer.reporting.tables import summarize_runs

    cfg, result = chunked_run
    table = summarize_runs([str(result.output_dir)], baseline=False, metrics=("recall_macro",))
    header, _, row = table.splitlines()[2:5]
    assert "test macro recall" in header
    assert f"{result.test['recall_macro']:.4f}" in row and "windows of 16 tokens, 4 shared, mean of logits" in row
    with pytest.raises(ConfigError, match="unknown table metric 'recall'"):
        summarize_runs([str(result.output_dir)], baseline=False, metrics=("recall",))
    summary = (result.output_dir / "summary.md").read_text()
    assert "- long texts: windows of 16 tokens" in summary and f"{result.test['num_windows']:,} windows" in summary


@pytest.mark.slow
def test_two_processes_aggregate_windows_per_document(tmp_path, tiny_bert_dir, long_csv):
    """torchrun, 2 CPU processes: each scores a share of the windows; gathered with their document
    ids, every test document is counted once and scores as the reloaded run scores it alone."""
    import os
    import subprocess
    import sys

    from conftest import REPO

    cfg = build_cfg(
        tmp_path,
        tiny_bert_dir,
        long_csv,
        "model.max_length=16",
        "model.chunking=true",
        "model.chunk_stride=4",
        "train.epochs=1",
        "train.eval_batch_size=7",
    )  # uneven shards: the last batch is padded by duplicates
    recipe = tmp_path / "two.yaml"
    recipe.write_text(cfg.to_yaml())
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [torchrun, "--nproc_per_node", "2", "--master_port", free_port(), "scripts/train.py", "--config", str(recipe), "--no-progress"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "2 process(es)" in proc.stderr
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    data = load_data(cfg.data)
    test = data.splits["test"]
    assert metrics["test"]["num_examples"] == len(test)
    assert metrics["test"]["num_windows"] == metrics["setup"]["windows"]["test"]
    ev = load_run(tmp_path / "run").evaluate(test["text"], [data.labels[i] for i in test["label"]])
    assert ev.metrics["confusion_matrix"] == metrics["test"]["confusion_matrix"]
    assert ev.metrics["loss"] == pytest.approx(metrics["test"]["loss"], rel=1e-4)


def test_a_decoder_trains_on_windows_and_reloads_to_the_same_metrics(tmp_path, tiny_llama_dir, long_csv):
    """Llama-style: a BOS in front of every window, left padding, last-token pooling."""
    cfg = build_cfg(
        tmp_path,
        tiny_llama_dir,
        long_csv,
        "model.max_length=16",
        "model.chunking=true",
        "model.chunk_stride=4",
        "model.pooling=auto",
        "train.epochs=1",
        "model.chunk_aggregate=max",
    )
    result = train(cfg, progress=False)
    data = load_data(cfg.data)
    test = data.splits["test"]
    assert result.test["num_examples"] == len(test) < result.test["num_windows"]
    ev = load_run(result.output_dir).evaluate(test["text"], [data.labels[i] for i in test["label"]])
    assert ev.metrics["confusion_matrix"] == result.test["confusion_matrix"]
    assert ev.metrics["loss"] == pytest.approx(result.test["loss"], rel=1e-5)
