"""Static word-piece vectors distilled from the sentence model, for the KG grader's ``span_encoding: static``.

Every word piece of the model's vocabulary is run through the model once on its own (``[CLS] piece [SEP]``);
its output vector, centred and reduced to ``dim`` components by PCA, is the piece's static vector. A text's
vector is the mean of its pieces' vectors, so grading runs no transformer pass for spans and concept phrases
(the recipe of Model2Vec, Tulkens & van Dongen, 2024, without its frequency weighting; written here because
model2vec's distiller pins transformers < 5.4).

The table is distilled the first time (about 40 s on 2 cores for MiniLM's 30,522 pieces, by the int8 ONNX
encoder) and kept under ``static/`` of the user cache dir (:func:`inkbase.runs.user_cache_dir`), keyed by the
model's files, the encoder that distilled it, ``dim`` and :data:`STATIC_VERSION`.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from grading.embed import (
    STATIC_BASE_VARIANT,
    Embedder,
    _folder_hash,
    _normalised,
    get_embedder,
    resolve_model_path,
)
from inkbase.jsonio import write_bytes
from inkbase.runs import user_cache_dir

log = logging.getLogger(__name__)

# Bump when the distillation recipe changes: cached tables are keyed by it.
STATIC_VERSION = "1"
DIM = 256


class StaticVectors:
    """A text's vector: the mean of its word pieces' rows of ``table`` (n_pieces, dim), normalised; a text
    with no piece gets a zero vector (cosine 0 with everything)."""

    def __init__(self, table: np.ndarray, tokenizer_json: str):
        from tokenizers import Tokenizer

        self.table = np.asarray(table, dtype=np.float32)
        self._tokenizer = Tokenizer.from_str(tokenizer_json)
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()

    @property
    def dim(self) -> int:
        return int(self.table.shape[1])

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, enc in enumerate(self._tokenizer.encode_batch(texts, add_special_tokens=False)):
            if enc.ids:
                out[i] = self.table[enc.ids].mean(axis=0)
        return _normalised(out)


def distill_rows(embedder: Embedder, ids: Sequence[int], batch_size: int = 512, progress: bool = False) -> np.ndarray:
    """The model's output vector (len(ids), d) of each word piece in ``ids`` read alone: ``[CLS] piece [SEP]``."""
    tok = embedder.tokenizer
    rows = []
    starts = range(0, len(ids), batch_size)
    for start in tqdm(starts, desc="static vectors", unit="batch", disable=not progress):
        chunk = np.asarray(ids[start:start + batch_size], dtype=np.int64)
        n = len(chunk)
        enc = {"input_ids": np.stack([np.full(n, tok.cls_token_id), chunk, np.full(n, tok.sep_token_id)], axis=1),
               "attention_mask": np.ones((n, 3), dtype=np.int64), "token_type_ids": np.zeros((n, 3), dtype=np.int64)}
        rows.append(embedder.states_of({k: v for k, v in enc.items() if k in tok.model_input_names})[:, 1])
    return np.concatenate(rows).astype(np.float32)


def distill_table(rows: np.ndarray, dim: int = DIM) -> np.ndarray:
    """Centre the pieces' vectors and keep their first ``dim`` principal components."""
    from sklearn.decomposition import PCA

    dim = min(dim, rows.shape[1], rows.shape[0])
    return PCA(n_components=dim, random_state=0).fit_transform(rows).astype(np.float32)


def _distiller(embedder: Embedder) -> Embedder:
    """The model's :data:`grading.embed.STATIC_BASE_VARIANT` encoder: one table per model, whichever variant
    asks, so a scorer trained on static vectors and the KG's spans read the same ones."""
    if embedder.variant == STATIC_BASE_VARIANT:
        return embedder
    return get_embedder(embedder.model_name, batch_size=embedder.batch_size, cache=False,
                        variant=STATIC_BASE_VARIANT, max_seq_length=embedder.max_seq_length)


def _cache_path(embedder: Embedder, dim: int) -> Path:
    embedder = _distiller(embedder)
    key = hashlib.sha1(f"{embedder.encoder_id}\0{_folder_hash(Path(resolve_model_path(embedder.model_name)))}\0"
                       f"{STATIC_VERSION}\0{dim}".encode()).hexdigest()[:16]
    return user_cache_dir() / "static" / f"{Path(embedder.model_name).name}-{key}.npy"


_LOADED: dict[tuple[str, int], StaticVectors] = {}


def static_vectors(embedder: Embedder, dim: int = DIM) -> StaticVectors:
    """The static vectors of ``embedder``'s model, distilled (by :func:`_distiller`) and cached on first use."""
    embedder = _distiller(embedder)
    memo = (embedder.encoder_id, dim)
    if memo not in _LOADED:
        path = _cache_path(embedder, dim)
        if path.is_file():
            table = np.load(path)
        else:
            vocab = embedder.tokenizer.backend_tokenizer.get_vocab_size()
            log.info("distilling static word-piece vectors from %s (%d pieces, once) -> %s",
                     embedder.model_name, vocab, path)
            table = distill_table(distill_rows(embedder, range(vocab), progress=True), dim).astype(np.float16)
            buf = io.BytesIO()
            np.save(buf, table)
            write_bytes(path, buf.getvalue())
        _LOADED[memo] = StaticVectors(table, embedder.tokenizer.backend_tokenizer.to_str())
    return _LOADED[memo]
