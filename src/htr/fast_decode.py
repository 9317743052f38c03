"""Fast batched beam search for TrOCR-style ``VisionEncoderDecoderModel``s, token-for-token like ``generate``.

``model.generate`` on one line at a time spends most of its time launching small kernels, growing a
dynamic KV cache by concatenation and repeating the cross-attention keys/values once per beam. This
decoder keeps the model's own weights and the exact search rules of transformers' vectorised beam
search (``GenerationMixin._beam_search``: scores, ``length_penalty``, ``early_stopping``, EOS handling,
finished-hypothesis bookkeeping, ``topk`` tie-breaking), but

* runs the encoder once per batch of lines and projects the cross-attention keys/values once per line
  (the ``num_beams`` beams of a line share them instead of holding ``num_beams`` copies),
* decodes all beams of all lines of a batch together with a preallocated self-attention cache,
* gives every decoding step fixed shapes, so that on a GPU each step is captured once as a CUDA graph
  and replayed (one launch per step instead of hundreds),
* freezes each line as soon as one-line-at-a-time ``generate`` would have stopped, so batching never
  changes a line's result (batched ``generate`` can, in rare corner cases).

Attention: ``attention="sdpa"`` (default) runs ``scaled_dot_product_attention`` on the query that
``TrOCRAttention`` scales after its projection; on an H100 it decodes ~1.4x faster than
``attention="eager"``, which mirrors ``TrOCRAttention`` step for step (``bmm``, softmax in the model
dtype). In float32 both give ``generate``'s tokens exactly; in bf16 any batched decoding (transformers'
own batched ``generate`` too) differs from one-line ``generate`` where two hypotheses are within bf16
rounding of each other, because differently shaped matrix products round differently.

Supported generation settings: ``num_beams`` (1 = greedy), ``max_length``/``max_new_tokens``,
``length_penalty``, ``early_stopping`` (True/False/"never"), ``min_length``, ``min_new_tokens``,
``no_repeat_ngram_size``, ``forced_bos_token_id``, ``forced_eos_token_id``, one or several EOS ids.
Anything else raises ``ValueError`` (use ``model.generate`` for it).

Entry point: :func:`fast_generate` (keeps a :class:`FastDecoder` per model and settings).
"""

from __future__ import annotations

import copy
import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# Generation settings this decoder implements; any other non-default setting is refused.
_SUPPORTED_NON_DEFAULT = {
    "num_beams", "max_length", "max_new_tokens", "length_penalty", "early_stopping", "min_length",
    "min_new_tokens", "no_repeat_ngram_size", "forced_bos_token_id", "forced_eos_token_id",
    "bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id", "use_cache",
    "output_attentions", "output_hidden_states", "transformers_version", "do_sample", "num_return_sequences",
    "return_dict_in_generate", "output_scores", "output_logits", "cache_implementation", "compile_config",
    "is_assistant", "trust_remote_code",
}
# Settings that only matter when sampling or in assisted (speculative) decoding; beam search and greedy
# search without an assistant ignore them.
_SAMPLING_ONLY = {"temperature", "top_k", "top_p", "min_p", "typical_p", "epsilon_cutoff", "eta_cutoff", "top_h",
                  "assistant_confidence_threshold", "assistant_lookbehind", "num_assistant_tokens",
                  "num_assistant_tokens_schedule", "target_lookbehind"}
# Values that switch a setting off: configs saved by older transformers spell them out instead of None.
_NEUTRAL = {"repetition_penalty": 1.0, "encoder_repetition_penalty": 1.0, "diversity_penalty": 0.0,
            "num_beam_groups": 1, "encoder_no_repeat_ngram_size": 0, "remove_invalid_values": False}

_NEG = -1.0e9  # the "impossible" score transformers' beam search uses (kept identical for identical ties)


@dataclass(frozen=True)
class SearchSettings:
    """Generation settings resolved the way ``generate`` resolves them for an encoder-decoder model."""

    num_beams: int
    max_length: int  # decoder start token included, as in ``generate``
    length_penalty: float
    early_stopping: bool | str
    eos_token_ids: tuple[int, ...]
    pad_token_id: int
    decoder_start_token_id: int
    min_length: int
    min_new_tokens: int
    no_repeat_ngram_size: int
    forced_bos_token_id: int | None
    forced_eos_token_ids: tuple[int, ...]

    @property
    def max_new_tokens(self) -> int:
        return self.max_length - 1

    @property
    def fill_value(self) -> int:
        # transformers fills beam-search outputs with ``pad_token_id or eos_token_id[0]`` (so pad id 0 -> EOS).
        return self.pad_token_id or self.eos_token_ids[0]


def _as_tuple(value) -> tuple[int, ...]:
    if value is None:
        return ()
    if isinstance(value, torch.Tensor):
        return tuple(int(v) for v in value.flatten().tolist())
    if isinstance(value, int):
        return (value,)
    return tuple(int(v) for v in value)


def resolve_settings(model, num_beams: int | None = None, max_new_tokens: int | None = None,
                     **overrides) -> SearchSettings:
    """Merge ``model.generation_config`` with call arguments, as ``model.generate(**kwargs)`` would."""
    gc = copy.deepcopy(model.generation_config)
    kwargs = dict(overrides)
    if num_beams is not None:
        kwargs["num_beams"] = num_beams
    if max_new_tokens is not None:
        kwargs["max_new_tokens"] = max_new_tokens
    unused = gc.update(**kwargs)
    if unused:
        raise ValueError(f"fast_generate: unknown generation arguments {sorted(unused)}")
    default = type(gc)()
    unsupported = sorted(
        k for k, v in gc.to_dict().items()
        if k not in _SUPPORTED_NON_DEFAULT and k not in _SAMPLING_ONLY and not k.startswith("_")
        and v != getattr(default, k, None) and not (k in _NEUTRAL and v == _NEUTRAL[k])
    )
    if unsupported:
        raise ValueError(f"fast_generate does not implement generation settings {unsupported}; use model.generate")
    if gc.do_sample:
        raise ValueError("fast_generate implements beam search and greedy search only (do_sample=False)")
    if (gc.num_return_sequences or 1) != 1:
        raise ValueError("fast_generate returns one sequence per line (num_return_sequences=1)")
    eos = _as_tuple(gc.eos_token_id)
    if not eos:
        raise ValueError("generation_config.eos_token_id is not set")
    start = gc.decoder_start_token_id if gc.decoder_start_token_id is not None else gc.bos_token_id
    if start is None:
        raise ValueError("generation_config.decoder_start_token_id (or bos_token_id) is not set")
    pad = gc.pad_token_id if gc.pad_token_id is not None else eos[0]
    # As ``generate``: ``max_new_tokens`` wins over ``max_length``; the decoder prompt is the start token.
    max_length = gc.max_new_tokens + 1 if gc.max_new_tokens is not None else gc.max_length
    if max_length < 2:
        raise ValueError(f"max_length={max_length} leaves no token to generate")
    num_beams = int(gc.num_beams or 1)
    return SearchSettings(
        num_beams=num_beams,
        max_length=int(max_length),
        length_penalty=float(gc.length_penalty if gc.length_penalty is not None else 1.0),
        early_stopping=gc.early_stopping if gc.early_stopping is not None else False,
        eos_token_ids=eos,
        pad_token_id=int(pad),
        decoder_start_token_id=int(start),
        min_length=int(gc.min_length or 0),
        min_new_tokens=int(gc.min_new_tokens or 0),
        no_repeat_ngram_size=int(gc.no_repeat_ngram_size or 0),
        forced_bos_token_id=gc.forced_bos_token_id,
        forced_eos_token_ids=_as_tuple(gc.forced_eos_token_id),
    )


def trim_generated(ids: torch.Tensor | Sequence[Sequence[int]], eos_token_ids: Sequence[int],
                   prompt_len: int = 1) -> list[tuple[int, ...]]:
    """Generated tokens of each row up to and including the first EOS (the row's hypothesis).

    This removes the decoder prompt and the padding that batched outputs carry, so one-line and batched
    outputs can be compared token for token.
    """
    rows = ids.tolist() if isinstance(ids, torch.Tensor) else [list(r) for r in ids]
    eos = set(eos_token_ids)
    out = []
    for row in rows:
        gen = row[prompt_len:]
        cut = next((i + 1 for i, tok in enumerate(gen) if tok in eos), len(gen))
        out.append(tuple(gen[:cut]))
    return out


class FastDecoder:
    """Beam (or greedy) search for one ``VisionEncoderDecoderModel`` + ``TrOCRForCausalLM`` and fixed settings.

    ``batch_size`` lines are decoded together. On CUDA a smaller batch is padded to the next power of two
    (each batch size has its own buffers and step graphs); on the CPU it runs at its own size. ``dtype`` (default: the model's) is the
    precision of all model arithmetic; a model in another dtype is copied once, and the copy follows
    in-place weight updates of the original (training) before each call.
    """

    def __init__(self, model, *, settings: SearchSettings, batch_size: int = 64,
                 dtype: torch.dtype | None = None, attention: str = "sdpa", cuda_graphs: bool = True,
                 check_every: int = 4):
        _check_architecture(model)
        if attention not in ("eager", "sdpa"):
            raise ValueError(f"attention must be 'eager' or 'sdpa', not {attention!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, not {batch_size}")
        self.source = model
        self.settings = settings
        self.batch_size = batch_size
        self.attention = attention
        self.check_every = max(1, check_every)
        src_dtype = next(model.parameters()).dtype
        self.dtype = dtype or src_dtype
        self.net = model if self.dtype == src_dtype else copy.deepcopy(model).to(self.dtype)
        self._synced_versions = self._weight_versions()
        self.device = next(self.net.parameters()).device
        self.cuda_graphs = cuda_graphs and self.device.type == "cuda"
        self._states: dict[int, _BatchState] = {}

    # ---- public API -------------------------------------------------------------------------------

    @torch.no_grad()
    def generate(self, pixel_values: torch.Tensor, length_hint: Sequence[float] | None = None) -> torch.Tensor:
        """Token ids ``(n_lines, length)`` like ``model.generate(pixel_values, ...)``: decoder start token,
        the best hypothesis, padding to the longest row. ``length_hint`` (e.g. the line images' widths
        before resizing) groups lines of similar length into a batch so batches finish together."""
        n = pixel_values.shape[0]
        if length_hint is not None and len(length_hint) != n:
            raise ValueError(f"length_hint has {len(length_hint)} entries for {n} lines")
        self._sync_weights()
        order = (sorted(range(n), key=lambda i: -float(length_hint[i])) if length_hint is not None
                 else list(range(n)))
        was_training = self.net.training
        self.net.eval()
        try:
            rows: list[torch.Tensor | None] = [None] * n
            lengths = [0] * n
            for start in range(0, n, self.batch_size):
                idx = order[start:start + self.batch_size]
                seqs, lens = self._run_batch(pixel_values[idx])
                for j, i in enumerate(idx):
                    rows[i], lengths[i] = seqs[j], lens[j]
        finally:
            self.net.train(was_training)
        width = 1 + max(lengths)
        out = torch.full((n, width), self.settings.fill_value if self.settings.num_beams > 1
                         else self.settings.pad_token_id, dtype=torch.long)
        for i, (row, length) in enumerate(zip(rows, lengths, strict=True)):
            out[i, :1 + length] = row[:1 + length]
        return out

    # ---- weights ----------------------------------------------------------------------------------

    def _weight_versions(self) -> int:
        return sum(p._version for p in self.source.parameters())

    def _sync_weights(self) -> None:
        if self.net is self.source:
            return
        versions = self._weight_versions()
        if versions != self._synced_versions:
            # In-place copy keeps the tensors the captured graphs point at.
            for dst, src in zip(self.net.state_dict().values(), self.source.state_dict().values(), strict=True):
                dst.copy_(src)
            self._synced_versions = versions

    # ---- one batch --------------------------------------------------------------------------------

    def _run_batch(self, pixel_values: torch.Tensor) -> tuple[list[torch.Tensor], list[int]]:
        n = pixel_values.shape[0]
        # Graphs have fixed shapes: a short batch is padded up to a power of two (few graph sets to keep).
        size = min(self.batch_size, 1 << max(3, (n - 1).bit_length())) if self.cuda_graphs else n
        pv = pixel_values.to(self.device, self.dtype)
        if n < size:  # pad with copies of the last line; their results are dropped
            pv = torch.cat([pv, pv[-1:].expand(size - n, *pv.shape[1:])])
        state = self._states.get(size)
        if state is None:
            state = _BatchState(self, size)
            self._states[size] = state
        state.load(self._encode(pv))
        state.decode()
        seqs, lens = state.result()
        return seqs[:n], lens[:n]

    def _encode(self, pixel_values: torch.Tensor) -> torch.Tensor:
        net = self.net
        hidden = net.encoder(pixel_values=pixel_values).last_hidden_state
        # As VisionEncoderDecoderModel.forward: project when sizes differ and no cross-attention size is set.
        if (net.encoder.config.hidden_size != net.decoder.config.hidden_size
                and getattr(net.decoder.config, "cross_attention_hidden_size", None) is None):
            hidden = net.enc_to_dec_proj(hidden)
        return hidden


class _BatchState:
    """Preallocated buffers and per-step CUDA graphs for one batch size."""

    def __init__(self, owner: FastDecoder, lines: int):
        s = owner.settings
        self.owner, self.s, self.B = owner, s, lines
        self.K = s.num_beams
        self.R = lines * self.K
        net = owner.net
        self.dec = net.decoder.model.decoder
        self.lm_head = net.decoder.output_projection
        cfg = net.decoder.config
        self.H = cfg.decoder_attention_heads
        self.D = cfg.hidden_size
        self.hd = self.D // self.H
        self.nl = len(self.dec.layers)
        self.L = s.max_length
        self.steps = s.max_length - 1
        dev, dt = owner.device, owner.dtype
        self.dev = dev
        # Self-attention cache, two copies (step t reads copy t % 2 and writes the beam-reordered prefix into
        # the other): (copy, position, layer, k/v, row, head, head_dim). Position-major, so the filled
        # prefix is one contiguous block that a single index_select reorders for all layers.
        # Greedy search never reorders, so it keeps a single copy.
        copies = 2 if self.K > 1 else 1
        self.kv = torch.zeros(copies, self.steps, self.nl, 2, self.R, self.H, self.hd, device=dev, dtype=dt)
        self.cross = None  # (layer, k/v, line, head, encoder position, head_dim), sized on first load
        self.pos = self._position_embeddings()
        self.eos = torch.tensor(s.eos_token_ids, device=dev)
        self.forced_eos = torch.tensor(s.forced_eos_token_ids, dtype=torch.long, device=dev)
        self.line_offset = torch.arange(lines, device=dev)[:, None] * self.K
        keep = max(2, 1 + len(s.eos_token_ids)) * self.K
        self.keep = keep
        self.top_mask = torch.cat([torch.ones(self.K, dtype=torch.bool),
                                   torch.zeros(keep - self.K, dtype=torch.bool)]).to(dev)
        B, K, L = lines, self.K, self.L
        self.run_seqs = torch.empty(B, K, L, dtype=torch.long, device=dev)
        self.run_scores = torch.empty(B, K, dtype=torch.float32, device=dev)
        self.fin_seqs = torch.empty(B, K, L, dtype=torch.long, device=dev)
        self.fin_scores = torch.empty(B, K, dtype=torch.float32, device=dev)
        self.fin = torch.empty(B, K, dtype=torch.bool, device=dev)
        self.unsat = torch.empty(B, 1, dtype=torch.bool, device=dev)
        self.frozen = torch.empty(B, dtype=torch.bool, device=dev)
        self.all_done = torch.empty((), dtype=torch.bool, device=dev)
        self.graphs: list | None = None

    def _position_embeddings(self) -> list[torch.Tensor]:
        """The decoder's position embedding of each step, as the module computes it."""
        emb = self.dec.embed_positions
        if self.dec.config.use_learned_position_embeddings:
            # Views of the table (rows offset as the module offsets them), so weight updates reach them.
            return [emb.weight[t + emb.offset].view(1, 1, self.D) for t in range(self.steps)]
        token = self.s.decoder_start_token_id
        if token == self.dec.padding_idx:
            token += 1  # sinusoidal positions give the pad id no position; any other id gives the same rows
        # The fixed sinusoidal table is a plain CPU attribute, not a buffer, so it is probed on the CPU.
        probe = torch.full((1, 1), token, dtype=torch.long)
        with torch.no_grad():
            return [emb(probe, past_key_values_length=t).reshape(1, 1, self.D).to(self.dev)
                    for t in range(self.steps)]

    # ---- per batch --------------------------------------------------------------------------------

    def load(self, enc: torch.Tensor) -> None:
        """Project cross-attention keys/values once per line and reset the search state."""
        B, S = enc.shape[0], enc.shape[1]
        if self.cross is None or self.cross.shape[4] != S:
            self.cross = torch.empty(self.nl, 2, B, self.H, S, self.hd, device=self.dev, dtype=self.owner.dtype)
            self.graphs = None
        for i, layer in enumerate(self.dec.layers):
            att = layer.encoder_attn
            self.cross[i, 0].copy_(att.k_proj(enc).view(B, S, self.H, self.hd).transpose(1, 2))
            self.cross[i, 1].copy_(att.v_proj(enc).view(B, S, self.H, self.hd).transpose(1, 2))
        self.reset()

    def reset(self) -> None:
        s = self.s
        self.run_seqs.fill_(s.fill_value if self.K > 1 else s.pad_token_id)
        self.run_seqs[:, :, 0] = s.decoder_start_token_id
        self.fin_seqs.copy_(self.run_seqs)
        self.run_scores.zero_()
        self.run_scores[:, 1:] = _NEG  # only the first beam is live at the start, as in transformers
        self.fin_scores.fill_(_NEG)
        self.fin.zero_()
        self.unsat.fill_(True)
        self.frozen.zero_()
        self.all_done.zero_()

    def decode(self) -> None:
        if not self.owner.cuda_graphs:
            for t in range(self.steps):
                self.step(t)
                if bool(self.all_done):
                    break
            return
        if self.graphs is None:
            self._capture()
            self.reset()  # the warm-up before capturing ran the steps: start clean
        for t, graph in enumerate(self.graphs):
            graph.replay()
            if (t + 1) % self.owner.check_every == 0 and bool(self.all_done):
                break

    def _capture(self) -> None:
        side = torch.cuda.Stream(device=self.dev)
        side.wait_stream(torch.cuda.current_stream(self.dev))
        with torch.cuda.stream(side):  # warm-up: library handles and workspaces exist before capture
            for t in range(self.steps):
                self.step(t)
        torch.cuda.current_stream(self.dev).wait_stream(side)
        pool = torch.cuda.graph_pool_handle()
        graphs = []
        for t in range(self.steps):
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                self.step(t)
            graphs.append(graph)
        self.graphs = graphs

    def result(self) -> tuple[list[torch.Tensor], list[int]]:
        best = (self.fin_seqs[:, 0] if self.K > 1 else self.run_seqs[:, 0]).to("cpu", copy=True)
        gen = best[:, 1:]
        is_eos = torch.isin(gen, self.eos.cpu())
        first = torch.where(is_eos.any(1), is_eos.int().argmax(1) + 1, torch.full_like(gen[:, 0], gen.shape[1]))
        return list(best), [int(x) for x in first]

    # ---- one decoding step (fixed shapes for a given t) ----------------------------------------------

    def step(self, t: int) -> None:
        tokens = self.run_seqs[:, :, t].reshape(self.R, 1)
        logits = self._decoder_step(tokens, t)
        scores = logits[:, 0].to(torch.float32)
        if self.K > 1:
            self._beam_update(t, scores)
        else:
            self._greedy_update(t, scores)

    def _decoder_step(self, tokens: torch.Tensor, t: int) -> torch.Tensor:
        dec, R, H, hd, D = self.dec, self.R, self.H, self.hd, self.D
        h = dec.embed_tokens(tokens) + self.pos[t]
        if dec.layernorm_embedding is not None:
            h = dec.layernorm_embedding(h)
        B, K = self.B, self.K
        cache = self.kv[t % self.kv.shape[0]]
        for i, layer in enumerate(dec.layers):
            # Self-attention over positions 0..t (TrOCRAttention's arithmetic: q scaled after projection).
            att = layer.self_attn
            residual = h
            q = att.q_proj(h) * att.scaling
            cache[t, i, 0].copy_(att.k_proj(h).view(R, H, hd))
            cache[t, i, 1].copy_(att.v_proj(h).view(R, H, hd))
            keys = cache[:t + 1, i, 0].permute(1, 2, 0, 3)  # (row, head, position, head_dim), a view
            values = cache[:t + 1, i, 1].permute(1, 2, 0, 3)
            q = q.view(R, 1, H, hd).transpose(1, 2)
            h = self._attend(q, keys, values).transpose(1, 2).reshape(R, 1, D)
            h = residual + att.out_proj(h)
            h = layer.self_attn_layer_norm(h)
            # Cross-attention: the K beams of a line are K queries against that line's keys/values.
            att = layer.encoder_attn
            residual = h
            q = (att.q_proj(h) * att.scaling).view(B, K, H, hd).transpose(1, 2)
            o = self._attend(q, self.cross[i, 0], self.cross[i, 1])  # (B, H, K, hd)
            h = o.transpose(1, 2).reshape(R, 1, D)
            h = residual + att.out_proj(h)
            h = layer.encoder_attn_layer_norm(h)
            residual = h
            h = layer.fc2(layer.activation_fn(layer.fc1(h)))
            h = layer.final_layer_norm(residual + h)
        return self.lm_head(h)

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q (N, H, m, hd), k/v (N, H, n, hd) -> (N, H, m, hd); q is already scaled."""
        if self.owner.attention == "sdpa":
            return F.scaled_dot_product_attention(q, k, v, scale=1.0)
        N, H, m, hd = q.shape
        n = k.shape[2]
        w = torch.bmm(q.reshape(N * H, m, hd), k.reshape(N * H, n, hd).transpose(1, 2))
        w = torch.softmax(w, dim=-1)
        return torch.bmm(w, v.reshape(N * H, n, hd)).view(N, H, m, hd)

    # ---- logits processors (vectorised, fixed shapes) -----------------------------------------------

    def _process(self, ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """Apply the supported processors in transformers' order; ``ids`` (rows, cur_len)."""
        s, cur_len = self.s, ids.shape[1]
        if s.no_repeat_ngram_size > 0 and cur_len >= s.no_repeat_ngram_size:
            n = s.no_repeat_ngram_size
            windows = ids.unfold(1, n, 1)  # (rows, cur_len - n + 1, n)
            prefix = ids[:, cur_len + 1 - n:]
            hit = (windows[..., :-1] == prefix[:, None, :]).all(-1)
            # Count hits per token so that duplicated window endings cannot cancel each other.
            banned = torch.zeros_like(scores).scatter_add_(1, windows[..., -1], hit.to(scores.dtype)) > 0
            scores = scores.masked_fill(banned, -math.inf)
        eos_cols = self.eos
        if s.min_length > 0 and cur_len < s.min_length:
            scores = scores.index_fill(1, eos_cols, -math.inf)
        if s.min_new_tokens > 0 and cur_len - 1 < s.min_new_tokens:
            scores = scores.index_fill(1, eos_cols, -math.inf)
        if s.forced_bos_token_id is not None and cur_len == 1:
            scores = torch.full_like(scores, -math.inf)
            scores[:, s.forced_bos_token_id] = 0
        if s.forced_eos_token_ids and cur_len == s.max_length - 1:
            scores = torch.full_like(scores, -math.inf).index_fill(1, self.forced_eos, 0.0)
        return scores

    def _is_eos(self, tokens: torch.Tensor) -> torch.Tensor:
        return (tokens[..., None] == self.eos).any(-1)

    # ---- search bookkeeping (transformers' _beam_search, per-line freezing) ---------------------------

    def _beam_update(self, t: int, logits: torch.Tensor) -> None:
        s, B, K, L = self.s, self.B, self.K, self.L
        cur_len = t + 1
        V = logits.shape[-1]
        log_probs = torch.log_softmax(logits, dim=-1)
        log_probs = self._process(self.run_seqs[:, :, :cur_len].reshape(self.R, cur_len), log_probs)
        log_probs = (log_probs.view(B, K, V) + self.run_scores[:, :, None]).reshape(B, K * V)

        topk_lp, topk_idx = torch.topk(log_probs, k=self.keep)
        src_beam = topk_idx // V
        topk_seqs = torch.take_along_dim(self.run_seqs, src_beam[:, :, None], dim=1)
        topk_seqs[:, :, cur_len] = topk_idx % V
        hits = self._is_eos(topk_seqs[:, :, cur_len])
        if cur_len + 1 >= L:
            hits = torch.ones_like(hits)

        # Next running beams: the best non-finished continuations.
        run_lp = topk_lp + hits.to(torch.float32) * _NEG
        nxt = torch.topk(run_lp, k=K)[1]
        new_run_seqs = torch.take_along_dim(topk_seqs, nxt[:, :, None], dim=1)
        new_run_scores = torch.take_along_dim(run_lp, nxt, dim=1)
        parent = torch.take_along_dim(src_beam, nxt, dim=1)

        # Finished hypotheses: merge the just-finished top-K continuations into the kept ones.
        did_finish = hits & self.top_mask[None, :]
        fin_lp = topk_lp / (cur_len ** s.length_penalty)
        full = torch.all(self.fin, dim=-1, keepdim=True) & (s.early_stopping is True)
        fin_lp = fin_lp + full.to(torch.float32) * _NEG
        fin_lp = fin_lp + (~self.unsat).to(torch.float32) * _NEG
        fin_lp = fin_lp + (~did_finish) * _NEG
        merged_scores = torch.cat((self.fin_scores, fin_lp), dim=1)
        sel = torch.topk(merged_scores, k=K)[1]
        new_fin_seqs = torch.take_along_dim(torch.cat((self.fin_seqs, topk_seqs), dim=1), sel[:, :, None], dim=1)
        new_fin_scores = torch.take_along_dim(merged_scores, sel, dim=1)
        new_fin = torch.take_along_dim(torch.cat((self.fin, did_finish), dim=1), sel, dim=1)

        # A line whose one-line search would already have stopped keeps its finished hypotheses.
        keep_old = self.frozen[:, None]
        self.fin_seqs.copy_(torch.where(keep_old[:, :, None], self.fin_seqs, new_fin_seqs))
        self.fin_scores.copy_(torch.where(keep_old, self.fin_scores, new_fin_scores))
        self.fin.copy_(torch.where(keep_old, self.fin, new_fin))
        self.run_seqs.copy_(new_run_seqs)
        self.run_scores.copy_(new_run_scores)

        # The surviving beams' self-attention cache (positions 0..t) goes to the copy that step t + 1 reads.
        if cur_len < self.steps:
            rows = (parent + self.line_offset).reshape(-1)
            torch.index_select(self.kv[t % 2, :cur_len], 3, rows, out=self.kv[(t + 1) % 2, :cur_len])

        # Stopping rules of transformers, evaluated per line (cur_len has grown by one).
        new_len = cur_len + 1
        if s.early_stopping == "never" and s.length_penalty > 0.0:
            best_len = s.max_length - 1
        else:
            best_len = new_len - 1
        best_running = self.run_scores[:, :1] / (best_len ** s.length_penalty)
        worst_fin = torch.where(self.fin, torch.min(self.fin_scores, dim=1, keepdim=True)[0], _NEG)
        self.unsat.copy_(self.unsat & torch.any(best_running > worst_fin, dim=-1, keepdim=True))
        line_done = ~self.unsat[:, 0] | (torch.all(self.fin, dim=-1) & (s.early_stopping is True)) | hits.all(-1)
        self.frozen.copy_(self.frozen | line_done)
        self.all_done.copy_(self.frozen.all())

    def _greedy_update(self, t: int, logits: torch.Tensor) -> None:
        s, cur_len = self.s, t + 1
        scores = self._process(self.run_seqs[:, 0, :cur_len], logits)
        nxt = torch.argmax(scores, dim=-1)
        live = ~self.frozen
        nxt = torch.where(live, nxt, s.pad_token_id)
        self.run_seqs[:, 0, cur_len] = nxt
        stop = self._is_eos(nxt) | (cur_len + 1 >= self.L)
        self.frozen.copy_(self.frozen | stop)
        self.all_done.copy_(self.frozen.all())


def _check_architecture(model) -> None:
    decoder = getattr(model, "decoder", None)
    if (getattr(model, "encoder", None) is None or decoder is None
            or not hasattr(decoder, "output_projection") or not hasattr(getattr(decoder, "model", None), "decoder")):
        raise TypeError("FastDecoder expects a VisionEncoderDecoderModel with a TrOCRForCausalLM decoder; "
                        f"got {type(model).__name__} (use model.generate)")


# Recently used decoders (buffers and CUDA graphs are worth keeping between calls); a decoder holds its
# model, so the cache is bounded rather than weak.
_DECODERS: OrderedDict = OrderedDict()
_MAX_DECODERS = 4


def fast_generate(model, pixel_values: torch.Tensor, num_beams: int | None = None,
                  max_new_tokens: int | None = None, *, batch_size: int = 64, dtype: torch.dtype | None = None,
                  attention: str = "sdpa", cuda_graphs: bool = True,
                  length_hint: Sequence[float] | None = None, **generation_kwargs) -> torch.Tensor:
    """``model.generate(pixel_values, num_beams=..., max_new_tokens=..., **generation_kwargs)``, fast.

    Returns token ids ``(n_lines, length)`` on the CPU, like ``generate`` (decoder start token first,
    padded), ready for ``tokenizer.batch_decode(ids, skip_special_tokens=True)``. Settings not given
    come from ``model.generation_config``. ``dtype=torch.bfloat16`` decodes a float32 model in bf16
    (a bf16 copy is kept and refreshed when the weights change). The decoder, its buffers and its CUDA
    graphs are kept per model and settings, so repeated calls do not pay the set-up again.
    """
    settings = resolve_settings(model, num_beams, max_new_tokens, **generation_kwargs)
    key = (id(model), settings, batch_size, dtype, attention, cuda_graphs)
    decoder = _DECODERS.get(key)
    if decoder is None or decoder.source is not model:
        decoder = FastDecoder(model, settings=settings, batch_size=batch_size, dtype=dtype,
                              attention=attention, cuda_graphs=cuda_graphs)
        _DECODERS[key] = decoder
        while len(_DECODERS) > _MAX_DECODERS:
            _DECODERS.popitem(last=False)
    _DECODERS.move_to_end(key)
    return decoder.generate(pixel_values, length_hint=length_hint)
