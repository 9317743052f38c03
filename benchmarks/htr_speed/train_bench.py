"""Training throughput of the TrOCR architecture: the seed's settings vs ours, and whether loading keeps up.

The model step runs on synthetic batches already on the device (random 384x384 images, random
40-token targets), so it measures the model and optimiser alone. ``loader_throughput`` separately
measures a realistic input pipeline (PNG decoding and the ViT image processor in DataLoader workers).
"""

from __future__ import annotations

import contextlib
import io
import time
import traceback
from collections.abc import Callable, Iterator

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from benchmarks.htr_speed.decode_bench import release_memory, synchronize
from benchmarks.htr_speed.flops import train_flops_per_sample
from benchmarks.htr_speed.models import build_trocr
from htr.fast_train import speed_up_training

AMP_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": None}


def compile_layers(model, **options) -> None:
    """Compile each transformer layer (every ``nn.ModuleList`` element: the ViT and the TrOCR layers).

    Layers of one kind share one compiled graph, so compiling costs two graphs' time instead of the whole
    model's, and the glue between layers (embeddings, loss) stays eager.
    """
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList):
            for layer in module:
                layer.compile(**options)


SDPA_BACKENDS = ("flash", "efficient", "cudnn", "math")


def train_step(model, opt, pixels: torch.Tensor, labels: torch.Tensor, amp_dtype: torch.dtype | None = None,
               scaler: torch.amp.GradScaler | None = None) -> torch.Tensor:
    """One optimiser step of a VisionEncoderDecoder on one batch (autocast to ``amp_dtype`` when given)."""
    with torch.autocast(pixels.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        # No KV cache in training: HF would build one, and its per-layer index makes the compiler
        # specialise every decoder layer separately.
        loss = model(pixel_values=pixels, labels=labels, use_cache=False).loss
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    else:
        loss.backward()
        opt.step()
    opt.zero_grad(set_to_none=True)
    return loss


@contextlib.contextmanager
def sdpa_only(backend: str | None) -> Iterator[None]:
    """Let ``scaled_dot_product_attention`` use only ``backend`` (None: torch's own choice) inside the block.

    The global switches are used rather than ``sdpa_kernel``, because compiled graphs pick the kernel when
    they are traced, which happens inside the block too.
    """
    if backend is None:
        yield
        return
    if backend not in SDPA_BACKENDS:
        raise ValueError(f"unknown SDPA backend {backend!r}; choose from {SDPA_BACKENDS}")
    cuda = torch.backends.cuda
    switches = {"flash": (cuda.flash_sdp_enabled, cuda.enable_flash_sdp),
                "efficient": (cuda.mem_efficient_sdp_enabled, cuda.enable_mem_efficient_sdp),
                "cudnn": (cuda.cudnn_sdp_enabled, cuda.enable_cudnn_sdp),
                "math": (cuda.math_sdp_enabled, cuda.enable_math_sdp)}
    before = {k: get() for k, (get, _) in switches.items()}
    try:
        for k, (_, set_) in switches.items():
            set_(k == backend)
        yield
    finally:
        for k, (_, set_) in switches.items():
            set_(before[k])


def train_setting(name: str, setting, cfg, device: torch.device) -> dict:
    """Steps/s and samples/s of one training setting on synthetic device-resident batches.

    Optional setting keys besides the required ones: ``speedups`` (:func:`htr.fast_train.speed_up_training`:
    SDPA decoder attention and a vocabulary padded to 64 rows), ``cudnn_benchmark`` (let cuDNN time its
    convolution algorithms, for the patch embedding), ``sdpa_backend`` (one of :data:`SDPA_BACKENDS`) and
    ``inductor`` (a mapping of ``torch._inductor.config`` options used while the layers compile and run).
    """
    import torch._inductor.config  # noqa: F401  (loads the compiler's options only when a setting runs)

    inductor = dict(setting.get("inductor") or {})
    cudnn_before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = bool(setting.get("cudnn_benchmark", False))
    try:
        with sdpa_only(setting.get("sdpa_backend")), torch._inductor.config.patch(inductor):
            row = _train_setting(name, setting, cfg, device)
    finally:
        torch.backends.cudnn.benchmark = cudnn_before
    row.update(speedups=bool(setting.get("speedups", False)), cudnn_benchmark=bool(setting.get("cudnn_benchmark", False)),
               sdpa_backend=setting.get("sdpa_backend"), inductor=inductor or None)
    return row


def _train_setting(name: str, setting, cfg, device: torch.device) -> dict:
    tc = cfg.train
    torch.manual_seed(0)
    if setting.compile:
        torch._dynamo.reset()  # graphs compiled for an earlier setting's model must not be reused or counted
    model = build_trocr(cfg.model.size, cross_attention_hidden_size=cfg.model.cross_attention_hidden_size,
                        device=device).train()
    if setting.get("speedups", False):
        speed_up_training(model)
    if setting.compile == "model":
        model.compile(mode=setting.compile_mode)
    elif setting.compile:
        compile_layers(model, mode=setting.compile_mode)
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay,
                            fused=True if setting.fused_adamw else None)
    amp_dtype = AMP_DTYPES[setting.precision]
    scaler = torch.amp.GradScaler(device.type) if setting.precision == "fp16" else None
    b, size = setting.batch_size, model.config.encoder.image_size
    vocab = model.config.decoder.vocab_size
    g = torch.Generator(device="cpu").manual_seed(0)
    pixels = torch.randn(b, 3, size, size, generator=g).to(device)
    labels = torch.randint(3, vocab, (b, tc.target_tokens), generator=g).to(device)

    def step() -> torch.Tensor:
        return train_step(model, opt, pixels, labels, amp_dtype, scaler)

    release_memory(device)
    start = time.perf_counter()
    for _ in range(tc.warmup_steps):
        loss = step()
    synchronize(device)
    warmup = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(tc.steps):
        loss = step()
    synchronize(device)
    seconds = time.perf_counter() - start
    samples_per_s = tc.steps * b / seconds
    flops = train_flops_per_sample(model.config, tc.target_tokens)
    row = {
        "section": "train", "setting": name, "batch_size": b, "precision": setting.precision,
        "fused_adamw": bool(setting.fused_adamw), "compile": setting.compile, "compile_mode": setting.compile_mode,
        "steps": tc.steps, "seconds": seconds, "warmup_seconds": warmup,
        "samples_per_s": samples_per_s, "train_flops_per_sample": flops,
        "achieved_tflops": flops * samples_per_s / 1e12,
        "mfu": flops * samples_per_s / (tc.peak_tflops * 1e12), "final_loss": loss.item(),
    }
    if device.type == "cuda":
        row["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return row


class EncodedLines(Dataset):
    """Line images held as PNG bytes, decoded and prepared per item as a real dataset would be.

    ``mode="processor"``: transformers' ViTImageProcessor per image (resize, rescale, normalise to float32
    RGB), as the seed's pipeline does. ``mode="uint8"``: PIL decodes and resizes the grey line (the same
    bilinear resize) and the worker returns uint8; rescaling, normalising and the grey-to-RGB expansion
    happen on the device (:func:`normalise_on_device`), so workers do less and transfers are 12x smaller.
    """

    def __init__(self, n: int, width: int, height: int, image_size: int, mode: str, seed: int = 0):
        from transformers import ViTImageProcessor

        rng = np.random.default_rng(seed)
        self.blobs = []
        for _ in range(n):
            img = np.full((height, width), 235, np.uint8)
            ink = rng.random((height, width)) < 0.08  # sparse dark strokes on paper-like background
            img[ink] = rng.integers(0, 90, int(ink.sum()), dtype=np.uint8)
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="PNG")
            self.blobs.append(buf.getvalue())
        self.mode, self.size = mode, image_size
        self.processor = ViTImageProcessor(size={"height": image_size, "width": image_size},
                                           image_mean=[0.5] * 3, image_std=[0.5] * 3)

    def __len__(self) -> int:
        return len(self.blobs)

    def __getitem__(self, i: int) -> torch.Tensor:
        img = Image.open(io.BytesIO(self.blobs[i]))
        if self.mode == "processor":
            return self.processor(img.convert("RGB"), return_tensors="pt").pixel_values[0]
        grey = img.convert("L").resize((self.size, self.size), Image.BILINEAR)
        return torch.from_numpy(np.asarray(grey).copy())


def normalise_on_device(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 (n, H, W) grey lines -> float32 (n, 3, H, W) in [-1, 1], as ViTImageProcessor with mean=std=0.5."""
    x = batch.to(device, non_blocking=True).float().div_(127.5).sub_(1.0)
    return x[:, None].expand(-1, 3, -1, -1)


def loader_throughput(cfg, image_size: int, mode: str, device: torch.device) -> dict:
    """Images/s that DataLoader workers deliver as model-ready device tensors, after worker start-up."""
    lc = cfg.train.loader
    data = EncodedLines(lc.distinct_images, lc.line_width, lc.line_height, image_size, mode)
    loader = DataLoader(data, batch_size=lc.batch_size, num_workers=lc.workers, shuffle=True,
                        persistent_workers=lc.workers > 0, drop_last=True, pin_memory=device.type == "cuda")
    seen, start = 0, None
    deadline = None
    while True:
        for batch in loader:
            pixels = normalise_on_device(batch, device) if mode == "uint8" else batch.to(device, non_blocking=True)
            if start is None:  # first batch pays for worker start-up
                synchronize(device)
                start = time.perf_counter()
                deadline = start + lc.seconds
                continue
            seen += pixels.shape[0]
            if time.perf_counter() >= deadline:
                synchronize(device)
                seconds = time.perf_counter() - start
                return {"section": "loader", "mode": mode,
                        "processor": type(data.processor).__name__ if mode == "processor" else "PIL + device",
                        "workers": lc.workers, "batch_size": lc.batch_size,
                        "images": seen, "seconds": seconds, "images_per_s": seen / seconds}


def run_training(cfg, device: torch.device, record: Callable[[dict], None], time_left: Callable[[], float]) -> None:
    tc = cfg.train
    for name, setting in tc.settings.items():
        if time_left() < tc.reserve_s:
            record({"section": "skipped", "what": f"train {name}", "why": "time budget"})
            continue
        try:
            record(train_setting(name, setting, cfg, device))
        except Exception as err:  # e.g. out of memory at this batch size, or a compiler failure
            record({"section": "train", "setting": name, "error": f"{type(err).__name__}: {str(err)[:300]}",
                    "traceback": traceback.format_exc(limit=6)})
        release_memory(device)  # the finished setting's model and optimiser state
    for mode in tc.loader.modes:
        if time_left() < tc.loader.seconds + 15:
            record({"section": "skipped", "what": f"loader {mode}", "why": "time budget"})
            continue
        record(loader_throughput(cfg, build_image_size(cfg), mode, device))


def build_image_size(cfg) -> int:
    from benchmarks.htr_speed.models import ARCHITECTURES

    return ARCHITECTURES[cfg.model.size]["encoder"]["image_size"]
