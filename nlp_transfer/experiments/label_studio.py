"""Label Studio's JSON: a round's batch as tasks to import, and an export's annotations read as labels.

    tasks = to_tasks(ids, texts, guesses, scores, "round-2")   # [{"data": {"text", "id"}, "predictions": [...]}]
    rows = read_export(Path("labels.json"))                      # [("task 1", id, label), ...]

A task's ``data`` holds the text and the pool's id; its prediction is the model's guess as a ``choices`` result
(from ``label`` to ``text``, a labelling config with ``<Choices name="label" toName="text">``). In an export, a task's
label is the first choice of its first annotation not cancelled; tasks without one stay unlabelled.
"""

from __future__ import annotations

import json
from pathlib import Path

from nlp_transfer.errors import DataError


def to_tasks(ids: list[str], texts: list[str], guesses: list[str | None], scores: list[float | None], version: str) -> list[dict]:
    tasks = []
    for id_, text, guess, score in zip(ids, texts, guesses, scores, strict=True):
        task = {"data": {"text": text, "id": id_}, "predictions": []}
        if guess is not None:
            result = {"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": [guess]}}
            task["predictions"].append({"model_version": version, "score": round(float(score), 4), "result": [result]})
        tasks.append(task)
    return tasks


def _choice(task: dict) -> str | None:
    for annotation in task.get("annotations") or []:
        if annotation.get("was_cancelled"):
            continue
        for result in annotation.get("result") or []:
            choices = (result.get("value") or {}).get("choices")
            if result.get("type", "choices") == "choices" and choices:
                return str(choices[0])
    return None


def read_export(path: Path) -> list[tuple[str, str, str]]:
    """(where, id, label) of every annotated task of a Label Studio JSON export."""
    try:
        tasks = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"{path} is not JSON ({e.msg} at line {e.lineno}); export the project from Label Studio as JSON") from None
    if not isinstance(tasks, list):
        raise DataError(f"{path} is not a Label Studio export (a JSON list of tasks); export the project as JSON")
    out = []
    for i, task in enumerate(tasks, 1):
        data = task.get("data") if isinstance(task, dict) else None
        if not isinstance(data, dict) or "id" not in data:
            raise DataError(f"{path} task {i} has no data.id; import the to_label.json written by nlp-transfer label, whose tasks carry it")
        label = _choice(task)
        if label is not None:
            out.append((f"task {i}", str(data["id"]), label))
    return out
