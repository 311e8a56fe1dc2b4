"""Shared fixtures: a tiny random BERT saved like a hub checkpoint, a learnable toy CSV, configs.

Everything is local and small, so unit tests run in seconds on two CPU cores and never touch
the network.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Feature caches of the tests go to a fresh folder of their own, never the user's cache.
import tempfile

os.environ["NLP_TRANSFER_CACHE"] = tempfile.mkdtemp(prefix="nlp-transfer-test-cache-")

import contextlib
import csv
import random
from pathlib import Path

import pytest

from nlp_transfer import RecipeConfig

# With one pytest-xdist worker per core, each worker and every command a test starts takes its share of the cores
# (set before torch is imported): at two threads a process, two workers on two cores oversubscribe them.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    os.environ["NLP_TRANSFER_NUM_THREADS"] = os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // _WORKERS))

REPO = Path(__file__).resolve().parent.parent

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
POS_WORDS = [
    "good",
    "great",
    "excellent",
    "wonderful",
    "superb",
    "lovely",
    "brilliant",
    "charming",
    "delightful",
    "moving",
    "funny",
    "clever",
    "fresh",
    "warm",
    "smart",
    "fine",
    "beautiful",
    "gripping",
    "joyful",
    "stunning",
]
NEG_WORDS = [
    "bad",
    "awful",
    "terrible",
    "boring",
    "dull",
    "poor",
    "weak",
    "silly",
    "tedious",
    "bland",
    "messy",
    "clumsy",
    "stale",
    "flat",
    "ugly",
    "lazy",
    "painful",
    "hollow",
    "sloppy",
    "tiresome",
]
FILLER = [
    "the",
    "a",
    "an",
    "this",
    "that",
    "movie",
    "film",
    "story",
    "plot",
    "actor",
    "actors",
    "scene",
    "scenes",
    "director",
    "script",
    "ending",
    "music",
    "cast",
    "is",
    "was",
    "were",
    "and",
    "but",
    "with",
    "of",
    "in",
    "on",
    "it",
    "its",
    "very",
    "quite",
    "rather",
    "really",
    "so",
    "too",
    "just",
    "all",
    "some",
    "many",
    "one",
    "two",
    "time",
    "hour",
    "minutes",
    "picture",
    "drama",
    "comedy",
    "thriller",
    "role",
    "lead",
    "camera",
    "dialogue",
    "pace",
    "tone",
    "style",
    "world",
    "characters",
    "show",
    "season",
    "night",
]
VOCAB = SPECIAL + POS_WORDS + NEG_WORDS + FILLER


def _sentence(rng: random.Random, label: str) -> str:
    words = POS_WORDS if label == "pos" else NEG_WORDS
    tokens = rng.choices(FILLER, k=rng.randint(3, 7)) + rng.sample(words, k=rng.randint(1, 2))
    rng.shuffle(tokens)
    return " ".join(tokens)


def toy_rows(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """``n`` distinct (text, label) rows, balanced; the label is decided by the sentiment words used."""
    rng = random.Random(seed)
    rows, seen = [], set()
    while len(rows) < n:
        label = ("neg", "pos")[len(rows) % 2]
        text = _sentence(rng, label)
        if text not in seen:
            seen.add(text)
            rows.append((text, label))
    return rows


def write_csv(path: Path, rows, header=("text", "label")) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide random BERT plus its WordPiece tokenizer, saved with save_pretrained."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    d = tmp_path_factory.mktemp("tiny-bert")
    vocab_file = d / "vocab.txt"
    vocab_file.write_text("\n".join(VOCAB) + "\n")
    tok = BertTokenizerFast.from_pretrained(str(d), do_lower_case=True, model_max_length=64)
    ids = tok(VOCAB[len(SPECIAL) :], add_special_tokens=False)["input_ids"]
    assert ids == [[i] for i in range(len(SPECIAL), len(VOCAB))], "every toy word must be one vocabulary entry"
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        type_vocab_size=2,
    )
    BertModel(config).eval().save_pretrained(d)
    tok.save_pretrained(d)
    return d


@pytest.fixture(scope="session")
def toy_csv(tmp_path_factory) -> Path:
    """400 rows of a learnable two-class task (labels 'neg' and 'pos')."""
    return write_csv(tmp_path_factory.mktemp("toy-data") / "toy.csv", toy_rows(400))


def build_cfg(tmp_path: Path, model_dir: Path, train_file: Path, *dotted: str, **sections: dict) -> RecipeConfig:
    """A small, fast recipe on ``model_dir`` and ``train_file``, run directory ``tmp_path/run``.

    Override with CLI-style strings (``"train.epochs=3"``) and/or whole-section dicts
    (``train={"epochs": 3}``); both go through the same validation as a YAML recipe.
    One CPU thread: for a 32-wide model, a second OpenMP thread only adds synchronisation,
    and on a busy machine it makes every tiny op milliseconds slower.
    """
    from nlp_transfer.config import apply_overrides

    raw = {
        "name": "toy",
        "model": {"name_or_path": str(model_dir), "pooling": "mean", "head_dropout": 0.0, "max_length": 32},
        "data": {"source": None, "train_file": str(train_file), "validation_fraction": 0.15, "test_fraction": 0.2},
        "transfer": {"mode": "full"},
        "train": {
            "epochs": 2,
            "batch_size": 8,
            "eval_batch_size": 32,
            "lr": 3e-3,
            "warmup_ratio": 0.0,
            "mixed_precision": "no",
            "seed": 0,
            "log_every": 1000,
            "num_threads": 1,
        },
        "output": {"dir": str(tmp_path / "run")},
    }
    for section, values in sections.items():
        if isinstance(values, dict):
            raw.setdefault(section, {}).update(values)
        else:  # top-level keys such as name
            raw[section] = values
    return RecipeConfig.from_dict(apply_overrides(raw, list(dotted)))


@pytest.fixture
def make_cfg(tiny_bert_dir, toy_csv):
    """``make_cfg(tmp_path, "train.epochs=3", transfer={"mode": "bitfit"})`` on the tiny model and toy CSV."""

    def factory(tmp_path: Path, *dotted: str, **sections: dict) -> RecipeConfig:
        return build_cfg(tmp_path, tiny_bert_dir, toy_csv, *dotted, **sections)

    return factory


def free_port() -> str:
    """A TCP port nobody listens on now, for torchrun's rendezvous (fixed ports collide when suites overlap)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


@contextlib.contextmanager
def serving(app):
    """``app`` served by uvicorn on a free port of 127.0.0.1 in a thread; yields its base URL, stops it after."""
    import threading
    import time

    import uvicorn

    port = int(free_port())
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert srv.started
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(10)


# ---- tiny decoders (GPT-2 and Llama) with a word-level tokenizer --------------------------------
SPECIALS = ["<unk>", "<s>", "</s>"]
WORDS = POS_WORDS + NEG_WORDS + FILLER


def save_tokenizer(d: Path, *, bos: bool, eos: bool, padding_side: str = "right") -> None:
    """A word-level fast tokenizer over the toy vocabulary, with no pad token."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(SPECIALS + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    if bos:  # Llama-style: <s> in front of every text
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    specials = {"unk_token": "<unk>", "bos_token": "<s>"} | ({"eos_token": "</s>"} if eos else {})
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=64, padding_side=padding_side, **specials)
    assert fast.pad_token is None
    fast.save_pretrained(d)


def save_gpt2(d: Path, *, eos: bool = True) -> Path:
    """GPT-2 as hub checkpoints are saved: the LM-head model (architectures GPT2LMHeadModel)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(SPECIALS + WORDS),
        n_embd=32,
        n_layer=2,
        n_head=2,
        n_positions=64,
        bos_token_id=1,
        eos_token_id=2,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    GPT2LMHeadModel(config).eval().save_pretrained(d)
    save_tokenizer(d, bos=False, eos=eos)
    return d


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory) -> Path:
    return save_gpt2(tmp_path_factory.mktemp("tiny-gpt2"))


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> Path:
    """A bare LlamaModel (architectures LlamaModel: detected by model type), BOS added, left padding."""
    import torch
    from transformers import LlamaConfig, LlamaModel

    d = tmp_path_factory.mktemp("tiny-llama")
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
    )
    LlamaModel(config).eval().save_pretrained(d)
    save_tokenizer(d, bos=True, eos=True, padding_side="left")
    return d


@pytest.fixture(scope="session")
def no_eos_gpt2_dir(tmp_path_factory) -> Path:
    """A tokenizer with neither pad nor end-of-sequence token: a pad token must be added."""
    return save_gpt2(tmp_path_factory.mktemp("tiny-gpt2-no-eos"), eos=False)


def kill_at_first_checkpoint(cmd: list[str], root: Path, env: dict) -> None:
    """Run ``cmd`` (a training or adapting script) and kill -9 it as soon as a complete checkpoint is under ``root``."""
    import nlp_transfer.training.checkpoints as ckpt

    kill_when(cmd, lambda: bool(ckpt.list_checkpoints(root)), env, "a checkpoint appeared", timeout=240)


def kill_when(cmd: list[str], ready, env: dict, what: str, timeout: float = 120) -> None:
    """Run ``cmd`` and kill -9 it as soon as ``ready()`` is true (``what`` names that moment in the failure message)."""
    import signal
    import subprocess
    import time

    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + timeout
        while not ready() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        assert proc.poll() is None, f"the process ended before {what}: {proc.stderr.read()[-2000:]}"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL


def save_run(root: Path, model_dir: Path, labels=("neg", "pos", "meh"), **model: object) -> Path:
    """``root/run``: a run directory of a random (untrained) classifier on ``model_dir`` with ``model`` settings
    (pooling, head, chunking, ...), for tests about what a saved run does rather than what it learnt."""
    from nlp_transfer.recipes import build_classifier

    cfg = RecipeConfig.from_dict(
        {
            "model": {"name_or_path": str(model_dir), "head_dropout": 0.0, "max_length": 32, **model},
            "data": {"source": None, "train_file": "unused.csv"},
        }
    )
    net, tok = build_classifier(cfg, list(labels))
    d = root / "run"
    net.save_pretrained(d, tok, precision="no", eval_batch_size=8, name="toy")
    return d


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for the module's in-process predictions on tiny models (a second OpenMP thread only adds
    synchronisation there, and on a busy machine it makes every batch many times slower); restored after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
