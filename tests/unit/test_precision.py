"""Mixed precision on the CPU: what must stay float32 does, and the settings that cannot train are refused.

CPU autocast lowers matrix products to bf16 or fp16 exactly as CUDA autocast does, so the centroid maths, the EMA
teacher, the centroid buffer and the GradScaler path are all checked here; `make gpu-smoke` repeats the stages on
a GPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from pytorch_lightning.plugins.precision import MixedPrecision

from diga.centroids.ops import class_mean_vectors, nearest_centroid_labels, sequential_ema
from diga.config.preflight import PreflightError
from diga.tasks import check_run
from diga.tasks.fit import build_module
from diga.utils.precision import float32_math, true_precision_problem
from tests.helpers import TRAINING_STAGES, compose_cfg, tiny_toy_overrides, training_stage_overrides

LOW = {"bf16": torch.bfloat16, "fp16": torch.float16}


@pytest.mark.parametrize("dtype", LOW.values(), ids=LOW.keys())
def test_float32_math_leaves_autocast(dtype: torch.dtype) -> None:
    a, b = torch.randn(8, 8), torch.randn(8, 8)

    @float32_math
    def product(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x @ y

    with torch.autocast("cpu", dtype=dtype):
        assert (a @ b).dtype == dtype  # what autocast does to an undecorated product
        out = product(a.to(dtype), b)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, a.to(dtype).float() @ b)


def test_nearest_centroid_labels_do_not_flip_under_bf16_autocast() -> None:
    """Features with a large component shared by every class: ‖f‖² + ‖μ‖² − 2 f·μ is a small difference of large
    numbers, which bf16 products turn into noise (most labels flipped before the fix)."""
    g = torch.Generator().manual_seed(0)
    shared = 40.0 * torch.ones(1, 64, 1, 1)
    centroids = shared.view(1, 64) + torch.randn(7, 64, generator=g)
    feat = shared + centroids[torch.randint(0, 7, (2 * 12 * 16,), generator=g)].T.reshape(64, 2, 12, 16).transpose(
        0, 1) - shared + 0.3 * torch.randn(2, 64, 12, 16, generator=g)  # fmt: skip
    expected = nearest_centroid_labels(feat, centroids, (24, 32))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = nearest_centroid_labels(feat.bfloat16(), centroids, (24, 32))
    agree = (got == expected).float().mean().item()
    assert agree > 0.999, f"only {agree:.1%} of the nearest-centroid labels agree with float32"


def test_class_means_do_not_overflow_under_fp16_autocast() -> None:
    """Per-class sums over many pixels exceed fp16's 65 504; the means must come out finite and equal to float32."""
    feat = 300.0 + torch.rand(2, 8, 32, 32)  # 1024 pixels × ~300 per class sum ≈ 3e5
    labels = torch.zeros(2, 32, 32, dtype=torch.long)
    labels[:, 16:] = 1
    expected, ok = class_mean_vectors(feat, labels, 3)
    with torch.autocast("cpu", dtype=torch.float16):
        got, ok16 = class_mean_vectors(feat.half(), labels, 3)
    assert got.dtype == torch.float32 and torch.isfinite(got).all()
    assert torch.equal(ok16, ok)
    torch.testing.assert_close(got, expected, atol=0.2, rtol=1e-3)  # the inputs were rounded to fp16 (step 0.25)


def _losses() -> dict[str, Any]:
    from diga.losses import cross_entropy, ohem_cross_entropy, symmetric_distillation
    from diga.uda import masked_consistency_loss
    from diga.uda.feature_distance import masked_feature_distance

    g = torch.Generator().manual_seed(2)
    z = [(4 * torch.randn(2, 7, 16, 16, generator=g)).bfloat16() for _ in range(4)]
    y = torch.randint(0, 7, (2, 16, 16), generator=g)
    f = torch.randn(2, 32, 8, 8, generator=g).bfloat16()
    w = torch.rand(2, 16, 16, generator=g)
    return {
        "cross_entropy": lambda: cross_entropy(z[0], y),
        "ohem_cross_entropy": lambda: ohem_cross_entropy(z[0], y, 0.7, 100),
        "symmetric_distillation": lambda: symmetric_distillation(*z, 0.5),
        "masked_consistency_loss": lambda: masked_consistency_loss(z[0][..., :8, :8], y, w),
        "masked_feature_distance": lambda: masked_feature_distance(f, f.flip(0), y[:, :8, :8] > 3),
    }


@pytest.mark.parametrize("name", sorted(_losses()))
def test_losses_of_bf16_logits_are_computed_in_float32(name: str) -> None:
    """On a GPU, autocast runs softmax and log-softmax in fp32; on a CPU it does not. diga's losses take their
    logits to float32 themselves, so a bf16 step computes the same loss on either device."""
    fn = _losses()[name]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = fn()
    with torch.autocast("cpu", enabled=False):
        exact = fn()  # the same bf16 inputs, taken to float32 inside
    assert low.dtype == torch.float32
    torch.testing.assert_close(low, exact, rtol=0, atol=0)


def test_sequential_ema_skips_invalid_rows_like_leaving_them_out() -> None:
    g = torch.Generator().manual_seed(1)
    centroids, vectors = torch.randn(3, 4, generator=g), torch.randn(6, 4, generator=g)
    classes = torch.tensor([0, 1, 0, 2, 0, 1])
    valid = torch.tensor([True, False, True, True, False, True])
    expected = centroids.clone()
    for c, v, ok in zip(classes, vectors, valid):
        if ok:
            expected[c] = 0.9 * expected[c] + 0.1 * v
    torch.testing.assert_close(sequential_ema(centroids, classes, vectors, 0.1, valid), expected)
    torch.testing.assert_close(sequential_ema(centroids, classes[valid], vectors[valid], 0.1), expected)


class RecordingScaler(torch.amp.GradScaler):
    """A real CPU GradScaler that records what Lightning asks of it."""

    def __init__(self) -> None:
        super().__init__("cpu", init_scale=2.0**16)
        self.calls: list[str] = []

    def scale(self, outputs: Any) -> Any:
        self.calls.append("scale")
        return super().scale(outputs)

    def unscale_(self, optimizer: torch.optim.Optimizer) -> None:
        self.calls.append("unscale_")
        super().unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer, *args: Any, **kwargs: Any) -> Any:
        self.calls.append(f"step {len(optimizer.param_groups[0]['params'])}")
        return super().step(optimizer, *args, **kwargs)

    def update(self, new_scale: Any = None) -> None:
        self.calls.append("update")
        super().update(new_scale)


class KeepLosses(pl.Callback):
    def __init__(self) -> None:
        self.losses: list[dict[str, float]] = []

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        self.losses.append({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/")})


def train_steps(cfg: Any, plugin: MixedPrecision, steps: int = 2) -> tuple[pl.LightningModule, KeepLosses]:
    module = build_module(cfg)
    datamodule = instantiate(cfg.datamodule, _recursive_=False)
    keep = KeepLosses()
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=steps, plugins=[plugin], logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         limit_val_batches=0, num_sanity_val_steps=0, callbacks=[keep])  # fmt: skip
    trainer.fit(module, datamodule=datamodule)
    return module, keep


def _float_dtypes(module: torch.nn.Module) -> set[torch.dtype]:
    return {t.dtype for t in [*module.parameters(), *module.buffers()] if t.is_floating_point()}


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
@pytest.mark.parametrize("stage", TRAINING_STAGES)
def test_every_stage_trains_under_cpu_autocast_with_float32_state(
    stage: str, precision: str, tmp_path: Path, toy_root: Path, selftrain_inputs: tuple[Path, Path]
) -> None:
    """Two steps of each stage inside autocast (16-mixed with a real GradScaler): finite losses; the weights, the EMA
    teacher and the centroids stay float32; under 16-mixed every optimiser steps through the scaler."""
    cfg = compose_cfg([*tiny_toy_overrides(tmp_path, toy_root.parent), *training_stage_overrides(stage,
                       selftrain_inputs), "log_images_every=0"])  # fmt: skip
    scaler = RecordingScaler() if precision == "16-mixed" else None
    start = build_module(cfg).state_dict()
    module, keep = train_steps(cfg, MixedPrecision(precision, "cpu", scaler=scaler))
    assert len(keep.losses) == 2
    for step in keep.losses:
        assert step and all(v == v and abs(v) != float("inf") for v in step.values()), step
    assert _float_dtypes(module) == {torch.float32}
    if stage == "selftrain":
        moved = (module.centroids - start["centroids"]).abs().max()
        assert torch.isfinite(module.centroids).all() and moved > 0
    if scaler is not None:
        optimisers = 2 if stage == "translator" else 1
        steps = [c for c in scaler.calls if c.startswith("step")]
        assert len(steps) == 2 * optimisers, scaler.calls  # no optimiser bypasses the scaler
        assert scaler.calls.count("update") == 2 * optimisers


@pytest.mark.parametrize("mixed", [False, True])
def test_the_translator_trains_in_fp32_unless_asked_for_mixed_precision(mixed: bool, tmp_path: Path,
                                                                       toy_root: Path) -> None:  # fmt: skip
    """A bf16-trained toy translator moved the warm-up after it by −4.1 mIoU (docs/gpus.md): under a 16-bit trainer
    precision it computes in fp32 unless `mixed_precision=true`."""
    cfg = compose_cfg([*tiny_toy_overrides(tmp_path, toy_root.parent), "stage=translator",
                       f"stage.module.mixed_precision={str(mixed).lower()}"])  # fmt: skip
    module = build_module(cfg)
    seen: list[torch.dtype] = []
    module.dec_s2t.register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    datamodule = instantiate(cfg.datamodule, _recursive_=False)
    trainer = pl.Trainer(accelerator="cpu", max_steps=1, plugins=[MixedPrecision("bf16-mixed", "cpu")], logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         limit_val_batches=0)  # fmt: skip
    trainer.fit(module, datamodule=datamodule)
    assert seen and set(seen) == {torch.bfloat16 if mixed else torch.float32}


@pytest.mark.parametrize(
    ("trainer", "expected"),
    [(["trainer=gpu"], "bf16-mixed"), (["trainer=ddp"], "bf16-mixed"), (["trainer=cpu"], "32-true"),
     (["trainer=ddp", "trainer.accelerator=cpu"], "32-true")],
)  # fmt: skip
def test_bf16_mixed_is_the_default_on_gpus_only(trainer: list[str], expected: str) -> None:
    assert compose_cfg(["experiment=toy", *trainer]).trainer.precision == expected


@pytest.mark.parametrize("precision", ["bf16-true", "16-true"])
def test_true_low_precision_is_refused_in_one_line(precision: str, tmp_path: Path, toy_root: Path) -> None:
    problem = true_precision_problem(precision)
    assert problem is not None and "\n" not in problem and precision.replace("true", "mixed") in problem
    for stage in ("source_only", "pipeline"):
        cfg = compose_cfg([*tiny_toy_overrides(tmp_path, toy_root.parent), f"stage={stage}",
                           f"trainer.precision={precision}"])  # fmt: skip
        with pytest.raises(PreflightError, match=f"^trainer.precision={precision} stores the weights"):
            check_run(cfg)
    assert true_precision_problem("bf16-mixed") is None and true_precision_problem("32-true") is None


def test_deterministic_true_on_cuda_is_refused_with_the_alternative(tmp_path: Path, toy_root: Path) -> None:
    cfg = compose_cfg([*tiny_toy_overrides(tmp_path, toy_root.parent), "stage=source_only", "trainer=gpu",
                       "trainer.deterministic=true"])  # fmt: skip
    with pytest.raises(PreflightError, match=r"trainer\.deterministic=true on CUDA.*trainer\.deterministic=warn"):
        check_run(cfg)
    cpu = compose_cfg([*tiny_toy_overrides(tmp_path, toy_root.parent), "stage=source_only",
                       "trainer.deterministic=true"])  # fmt: skip
    check_run(cpu)  # CPU kernels are deterministic: nothing to refuse
