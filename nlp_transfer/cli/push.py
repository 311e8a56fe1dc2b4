"""``nlp-transfer push``: upload a run directory (model, tokenizer, manifest, results, model card) to the Hugging Face Hub."""

from __future__ import annotations

import argparse
import os
import sys

OFFLINE_VALUES = ("1", "on", "yes", "true")


def push_main(argv: list[str], prog: str = "nlp-transfer push") -> str:
    """Create ``REPO_ID`` (if needed) and upload ``RUN`` to it; returns the commit URL."""
    p = argparse.ArgumentParser(
        prog=prog,
        description="Upload a run directory (written by nlp-transfer train or export) to a model repository on the "
        "Hugging Face Hub: weights, tokenizer, nlp_transfer.json, recipe.yaml, metrics.json, summary.md and its "
        "README.md model card. The repository is created if it does not exist.",
        epilog="example:\n  nlp-transfer push runs/rt-minilm-full my-name/rt-minilm-full --private",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run", help="run directory (the output.dir of a finished training run, or an export)")
    p.add_argument("repo_id", help="model repository on the Hub, as user-or-org/name")
    p.add_argument("--private", action="store_true", help="create the repository as private (an existing one keeps its setting)")
    p.add_argument("--token", help="Hugging Face access token with write access (default: HF_TOKEN or the stored login)")
    p.add_argument("--revision", help="branch to push to (created from the default branch if missing; default: main)")
    p.add_argument("--message", help="commit message (default: 'Upload <run name> with nlp-transfer')")
    args = p.parse_args(argv)

    from nlp_transfer.errors import ConfigError, ModelError
    from nlp_transfer.inference.predictor import check_run_dir
    from nlp_transfer.manifest import read_manifest
    from nlp_transfer.reporting.card import CARD_FILE, write_model_card

    run = check_run_dir(args.run)  # not a run, or an incomplete one: one line, before any network
    if args.repo_id.count("/") != 1 or not all(args.repo_id.split("/")):
        raise ConfigError(f"repository id '{args.repo_id}' must look like user-or-org/name")
    if not (run / CARD_FILE).is_file():  # runs written before model cards existed get one now
        write_model_card(run)
    import huggingface_hub
    from huggingface_hub import HfApi

    if os.environ.get("HF_HUB_OFFLINE", "").lower() in OFFLINE_VALUES or huggingface_hub.constants.HF_HUB_OFFLINE:
        raise ModelError(
            f"cannot push to the Hugging Face Hub: offline mode is on (HF_HUB_OFFLINE=1); unset it where {_host()} is reachable"
        )
    name = read_manifest(run).name or run.name
    api = HfApi(token=args.token)
    try:
        api.create_repo(args.repo_id, private=args.private or None, exist_ok=True)
        if args.revision:
            api.create_branch(args.repo_id, branch=args.revision, exist_ok=True)
        commit = api.upload_folder(
            repo_id=args.repo_id,
            folder_path=str(run),
            revision=args.revision,
            commit_message=args.message or f"Upload {name} with nlp-transfer",
        )
    except Exception as e:  # noqa: BLE001 - the Hub client raises requests/httpx/OS errors and its own
        raise ModelError(f"cannot push to the Hugging Face Hub: {_reason(e)}") from None
    url = getattr(commit, "commit_url", None) or str(commit)
    print(f"pushed {run} to {args.repo_id}: {url}", file=sys.stderr)
    return url


def _host() -> str:
    import huggingface_hub

    return huggingface_hub.constants.ENDPOINT


def _reason(e: BaseException) -> str:
    """One line: no network, offline mode, or the Hub's own answer (authentication, permissions ...)."""
    from huggingface_hub.errors import OfflineModeIsEnabled

    chain, seen = [], e
    while seen is not None and len(chain) < 10:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    if any(isinstance(x, OfflineModeIsEnabled) for x in chain):
        return "offline mode is on (HF_HUB_OFFLINE=1); unset it where the Hub is reachable"
    names = {t.__name__ for x in chain for t in type(x).__mro__}
    if names & {
        "ConnectionError",
        "ConnectError",
        "ConnectTimeout",
        "TransportError",
        "NameResolutionError",
        "gaierror",
        "TimeoutException",
    }:
        return f"no network connection to {_host()}; push from a machine that reaches it"
    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return f"{type(e).__name__}: {first[:300]}"
