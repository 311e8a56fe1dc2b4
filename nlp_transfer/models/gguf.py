"""GGUF checkpoints: dequantize once into an ordinary checkpoint directory, cached on disk.

``transformers`` reads a GGUF file (``gguf_file=``) by dequantizing every tensor to fp32,
which takes ~20 s for SmolLM2-135M on two cores. The first use converts the file and saves
model and tokenizer with ``save_pretrained``; later runs load that directory in about a
second. The cache key is the file's identity (resolved path, size, modification time), so
a replaced file converts again. Writes are atomic (a temporary sibling, then a rename), so
concurrent processes (DDP ranks, parallel runs) never see a half-written checkpoint.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import shutil
import uuid
from pathlib import Path

from nlp_transfer.errors import ModelError
from nlp_transfer.utils.extras import extra_hint
from nlp_transfer.utils.logs import quiet
from nlp_transfer.utils.paths import cache_root  # $NLP_TRANSFER_CACHE or ~/.cache/nlp_transfer, shared with the feature cache

logger = logging.getLogger("nlp_transfer")
SOURCE_FILE = "nlp_transfer_gguf.json"


def gguf_key(gguf: Path) -> str:
    st = gguf.stat()
    return hashlib.sha256(f"{gguf.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]


def converted_dir(gguf: str | Path) -> Path:
    """Where the converted checkpoint of ``gguf`` lives (whether or not it exists yet)."""
    gguf = Path(gguf)
    return cache_root() / "checkpoints" / f"{gguf.stem}-{gguf_key(gguf)}"


def locate_gguf(name_or_path: str, gguf_file: str) -> Path:
    """The GGUF file named by ``model.gguf_file``: a path, or a file inside ``model.name_or_path``
    (a local directory or, online, a hub repository)."""
    direct = Path(gguf_file).expanduser()
    if direct.is_file():
        return direct
    base = Path(name_or_path).expanduser()
    if base.is_dir():
        if (base / gguf_file).is_file():
            return base / gguf_file
        raise ModelError(f"model.gguf_file='{gguf_file}' is not a file in '{name_or_path}'; name a .gguf file that exists there")
    if direct.is_absolute() or name_or_path.startswith((".", "/", "~")):
        raise ModelError(f"model.gguf_file='{gguf_file}' does not exist; give the path of a .gguf file")
    from huggingface_hub import hf_hub_download  # a hub repository, for online users

    try:
        return Path(hf_hub_download(name_or_path, gguf_file))
    except Exception as e:  # offline, unknown repository or file
        raise ModelError(f"could not find '{gguf_file}' in '{name_or_path}': {str(e).splitlines()[0]}") from None


def gguf_checkpoint(gguf: str | Path) -> Path:
    """An ordinary checkpoint directory (config, safetensors, tokenizer) for a GGUF file,
    converted on first use and cached (see module docstring)."""
    gguf = Path(gguf)
    if not gguf.is_file():
        raise ModelError(f"GGUF file '{gguf}' does not exist")
    out = converted_dir(gguf)
    if (out / "config.json").is_file():
        return out
    logger.info(f"converting {gguf.name} once into {out} (dequantizing takes a while; later runs reuse it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        _convert(gguf, tmp)
        try:
            tmp.rename(out)
        except OSError:  # another process finished first: keep its copy
            if not (out / "config.json").is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _convert(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer, GgufConfig

    if importlib.util.find_spec("gguf") is None:
        raise ModelError(extra_hint("gguf", "reading a GGUF file", ["gguf"]))
    where, name = str(gguf.parent), gguf.name
    # Dense fp32 weights (not GGUF blocks): trainable, and savable as an ordinary checkpoint.
    load = {"gguf_file": name, "dtype": torch.float32, "quantization_config": GgufConfig(dequantize=True)}
    try:
        tokenizer = quiet(AutoTokenizer.from_pretrained, where, gguf_file=name)
        try:  # GGUF files are language models; keep the LM head so the cache is a complete checkpoint
            model = quiet(AutoModelForCausalLM.from_pretrained, where, **load)
        except ValueError:
            model = quiet(AutoModel.from_pretrained, where, **load)
    except (OSError, ValueError, KeyError) as e:
        raise ModelError(f"could not read GGUF file '{gguf}': {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    st = gguf.stat()
    source = {"gguf_file": str(gguf.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    (out / SOURCE_FILE).write_text(json.dumps(source, indent=2))
