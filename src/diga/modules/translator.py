"""Stage `translator`: the image domain translator, trained with manual optimisation.

Per step: one generator forward (translations, self-reconstructions, cycles) → discriminator update on detached
fakes → generator/encoder update with the discriminators frozen. Losses and weights as in REF:
0.5·LSGAN + 10·cycle L1 + 20·semantic-edge L1 + 0.1·VGG perceptual + λ_self·self-reconstruction L1.

REF keeps six Adam optimisers (one per network). Adam's state and update are per parameter, so one Adam over
both discriminators and one over the four generator networks (same lr, betas, schedule) are identical.
The discriminator optimiser is stepped through the strategy (`step_uncounted`), not through Lightning's optimiser
wrapper, so that `global_step` counts iterations, not optimiser steps — yet under `16-mixed` its gradients are
unscaled, inf-checked and skipped by the same GradScaler as the generators'. All six networks are checkpointed
(REF keeps only two and cannot resume); `export` writes `translator.pt` with `enc_s` and `dec_s2t` for the later
stages.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import nullcontext
from pathlib import Path
from typing import Any, ClassVar

import pytorch_lightning as pl
import torch
from torch import nn

from diga.evaluation.visualize import log_image_rows, to_uint8_hwc
from diga.modules.base import to_float_image
from diga.modules.contract import StageInput, file_input
from diga.modules.optim import poly_lambda
from diga.translation.losses import VGGPerceptual, discriminator_loss, generator_losses
from diga.translation.networks import ImgDecoder, ImgEncoder, MultiScaleDiscriminator
from diga.utils.artifacts import TRANSLATOR
from diga.utils.atomic_checkpoints import atomic_torch_save
from diga.utils.memory import MemoryEstimate, autocast_context, probe_size, saved_activation_bytes, tensor_bytes


class TranslatorModule(pl.LightningModule):
    validates: ClassVar[bool] = False  # no validation sets: judged by the warm-up that uses it
    produces: ClassVar[tuple[str, ...]] = (TRANSLATOR,)
    last_val_step: int | None = None

    @classmethod
    def declared_inputs(cls, stage: Mapping[str, Any]) -> list[StageInput]:
        """The VGG-19 of the perceptual loss, when that loss is on."""
        module = stage.get("module") or {}
        vgg = module.get("vgg_weights") if float(module.get("w_percep", 0) or 0) > 0 else None
        return file_input("weights", "VGG-19 ImageNet weights for the translator's perceptual loss", vgg,
                          "stage.module.vgg_weights, or stage.module.w_percep=0 to drop the loss",
                          "torchvision's vgg19-dcbb9e9d.pth")  # fmt: skip

    def __init__(self, width: int = 64, n_res: int = 4, disc_width: int = 64, disc_scales: int = 3, lr: float = 1e-4,
                 betas: tuple[float, float] = (0.5, 0.999), poly_power: float = 0.9, w_adv: float = 0.5,
                 w_cyc: float = 10.0, w_edge: float = 20.0, w_percep: float = 0.1, w_self: float = 0.001,
                 vgg_weights: str | None = None, grad_checkpointing: bool = False, log_images_every_n_steps: int = 0,
                 label_set: str = "cityscapes19", fused: bool = True,
                 mixed_precision: bool = False) -> None:  # fmt: skip
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.enc_s, self.enc_t = ImgEncoder(width, n_res), ImgEncoder(width, n_res)
        self.dec_s2t, self.dec_t2s = ImgDecoder(width, n_res), ImgDecoder(width, n_res)
        self.dis_s2t = MultiScaleDiscriminator(disc_width, num_scales=disc_scales)
        self.dis_t2s = MultiScaleDiscriminator(disc_width, num_scales=disc_scales)
        self.vgg = VGGPerceptual(vgg_weights) if w_percep > 0 else None
        for net in [*self.generators(), self.dis_s2t, self.dis_t2s, *([self.vgg] if self.vgg else [])]:
            net.set_grad_checkpointing(grad_checkpointing)
        self.val_names: list[str] = []
        self.result_names: list[str] = []

    def memory_fallbacks(self, source_images: int, target_images: int) -> list[tuple[str, ...]]:
        """What lowers this stage's memory when its estimate does not fit (`diga.tasks.memory_fit`)."""
        return [] if self.hparams.grad_checkpointing else [("stage.module.grad_checkpointing=true",)]

    def estimate_memory(self, crop: tuple[int, int], source_images: int, target_images: int,
                        precision: str | None = None) -> MemoryEstimate:  # fmt: skip
        """Six networks with Adam state, the frozen VGG, and what one step's graphs keep (probe at half the crop)."""
        nets = [*self.generators(), self.dis_s2t, self.dis_t2s]
        weights = sum(tensor_bytes(p for p in n.parameters()) for n in nets) * 4  # weight, gradient, 2 Adam moments
        weights += tensor_bytes(self.vgg.parameters()) if self.vgg is not None else 0
        h, w = probe_size(crop)
        s, t = torch.rand(1, 3, h, w) * 2 - 1, torch.rand(1, 3, h, w) * 2 - 1

        def step_graph() -> torch.Tensor:
            out = self.forward_all(s, t)
            loss = sum(m.mean() for m in self.dis_s2t(out["s2t"])) + sum(m.mean() for m in self.dis_t2s(out["t2s"]))
            if self.vgg is not None:
                loss = loss + self.vgg(out["s2t"], s) + self.vgg(out["t2s"], t)
            return loss

        params = [p for n in nets for p in n.parameters()]
        with autocast_context(precision if self.hparams.mixed_precision else None):
            per_pair = saved_activation_bytes(step_graph, exclude=params)
            recompute = 0
            if self.hparams.grad_checkpointing:  # the backward pass recomputes one network at a time
                feat = self.enc_s(s).detach().requires_grad_()
                self.dec_s2t.set_grad_checkpointing(False)
                try:
                    recompute = saved_activation_bytes(lambda: self.dec_s2t(feat), exclude=params)
                finally:
                    self.dec_s2t.set_grad_checkpointing(True)
        pixels = crop[0] * crop[1] / (h * w)
        pairs = (source_images + target_images) / 2
        acts = per_pair * pixels * pairs + recompute * pixels * max(source_images, target_images)
        return MemoryEstimate(weights, int(acts))

    def generators(self) -> list[nn.Module]:
        return [self.enc_s, self.enc_t, self.dec_s2t, self.dec_t2s]

    def configure_optimizers(self) -> tuple[list[torch.optim.Optimizer], list[Any]]:
        hp = self.hparams
        gen = [p for m in self.generators() for p in m.parameters()]
        dis = [*self.dis_s2t.parameters(), *self.dis_t2s.parameters()]
        fused = hp.fused or None  # None: torch's default (a per-tensor loop on the CPU)
        opt_g = torch.optim.Adam(gen, lr=hp.lr, betas=tuple(hp.betas), fused=fused)
        opt_d = torch.optim.Adam(dis, lr=hp.lr, betas=tuple(hp.betas), fused=fused)
        n = self.trainer.max_steps if self.trainer.max_steps and self.trainer.max_steps > 0 else 1
        lam = poly_lambda(n, hp.poly_power)
        return [opt_g, opt_d], [torch.optim.lr_scheduler.LambdaLR(o, lam) for o in (opt_g, opt_d)]

    def forward_all(self, s: torch.Tensor, t: torch.Tensor) -> dict[str, torch.Tensor]:
        f_s, f_t = self.enc_s(s), self.enc_t(t)
        s2t, t2s = self.dec_s2t(f_s), self.dec_t2s(f_t)
        return {
            "s2t": s2t,
            "t2s": t2s,
            "s_rec": self.dec_t2s(f_s),
            "t_rec": self.dec_s2t(f_t),
            "s_cyc": self.dec_t2s(self.enc_t(s2t)),
            "t_cyc": self.dec_s2t(self.enc_s(t2s)),
        }

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """Inside the trainer's autocast only with `mixed_precision`: the adversarial game is sensitive to it (a
        bf16-trained toy translator moved the warm-up after it by −4.1 mIoU; docs/gpus.md), so by default the
        translator computes in fp32 while the segmentation stages use the trainer's precision."""
        with nullcontext() if self.hparams.mixed_precision else torch.autocast(self.device.type, enabled=False):
            self._train_step(batch)

    def _train_step(self, batch: dict[str, Any]) -> None:
        hp = self.hparams
        opt_g, opt_d = self.optimizers()
        s = to_float_image(batch["source"]["image"]) * 2 - 1  # networks work in [−1, 1] (tanh output)
        t = to_float_image(batch["target"]["image"]) * 2 - 1
        y = batch["source"]["label"]
        out = self.forward_all(s, t)

        # discriminators on detached fakes
        self.toggle_optimizer(opt_d)
        loss_d = discriminator_loss(self.dis_s2t, self.dis_t2s, s, t, out["s2t"], out["t2s"])
        opt_d.zero_grad()
        self.manual_backward(loss_d)
        self.step_uncounted(opt_d)  # global_step counts iterations (one per generator step)
        self.untoggle_optimizer(opt_d)

        # generators / encoders with the discriminators frozen
        self.toggle_optimizer(opt_g)
        weights = {k: float(hp[k]) for k in ("w_adv", "w_cyc", "w_edge", "w_percep", "w_self")}
        losses = generator_losses(out, s, t, y, self.dis_s2t, self.dis_t2s, self.vgg, weights)
        loss_g = losses["loss_g"]
        opt_g.zero_grad()
        self.manual_backward(loss_g)
        opt_g.step()
        self.untoggle_optimizer(opt_g)
        for sch in self.lr_schedulers():
            sch.step()

        logs = {"loss_d": loss_d, **losses}
        self.log_dict({f"train/{k}": v.detach() for k, v in logs.items()}, batch_size=s.shape[0])
        self.log("train/loss", loss_g.detach(), prog_bar=True, batch_size=s.shape[0])
        every = hp.log_images_every_n_steps
        if every and self.global_step % every == 0:
            rows = [
                [to_uint8_hwc((v[i] + 1) / 2) for v in (s, out["s2t"], t, out["t2s"])] for i in range(min(2, len(s)))
            ]
            log_image_rows(self.loggers, "train/translation", rows, "source | source→target | target | target→source",
                           self.global_step)  # fmt: skip

    def step_uncounted(self, optimizer: Any) -> None:
        """An optimiser step through the precision plugin (GradScaler unscale, inf check and update under 16-mixed;
        the `on_before_optimizer_step` hooks) that Lightning's step counter does not see."""
        self.trainer.strategy.optimizer_step(optimizer.optimizer, closure=lambda: None, model=self)

    def export(self, out_dir: str | Path) -> Path:
        """`translator.pt`: what LearnedTranslator loads (architecture + enc_s + dec_s2t)."""
        path = Path(out_dir) / TRANSLATOR
        atomic_torch_save({"arch": {"width": self.hparams.width, "n_res": self.hparams.n_res},
                           "enc_s": self.enc_s.state_dict(), "dec_s2t": self.dec_s2t.state_dict()}, path)  # fmt: skip
        return path

    def param_summary(self) -> Mapping[str, int]:
        return {name: sum(p.numel() for p in m.parameters()) for name, m in self.named_children()}
