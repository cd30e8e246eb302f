"""Stage `selftrain`: self-training with dynamic, threshold-free pseudo-label selection.

Per step (the reference's order): EMA update (start of step) → the warm-up's source branch (CrDoMix view,
symmetric distillation; `WarmupModule.source_branch`) → target branch: teacher features of the raw target crops,
nearest-centroid labels, bilateral consensus with the offline pseudo-label → DACS class-mix of the source onto the
augmented target → online centroid EMA updates (target first, then source; momentum 1e-4; all ranks apply the
same all-gathered updates) → L = seg(student(x_s), y_s) + seg(student(x_mix), y_mix) + λ_KD · KD.

`pl_selection`: consensus (DiGA) | offline (offline pseudo-labels as they are — with a thresholded pseudo-label
stage this is the fixed-threshold baseline) | centroid (nearest-centroid labels only).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from diga.centroids import load_centroids, nearest_centroid_labels, ordered_class_vectors, sequential_ema
from diga.data.labels import IGNORE_INDEX
from diga.evaluation.visualize import log_image_rows, to_uint8_hwc
from diga.mixing import mix_images, mix_labels, sample_class_masks
from diga.modules.base import upsample
from diga.modules.contract import StageInput, file_input
from diga.modules.daformer import DAFormerModule
from diga.modules.warmup import WarmupModule
from diga.pseudo_labels import PL_SELECTIONS, per_class_selection_stats, select_pseudo_labels
from diga.uda import MaskedImageConsistency, confidence_weighted_pseudo_labels


class SelfTrainModule(WarmupModule):
    """Args (beyond WarmupModule): centroids_path, centroid_momentum (1e-4), min_pixels (5), pl_selection,
    mix_weight (weight of the class-mix loss), pseudo_threshold (0.968, for pl_selection=daformer and MIC), and
    masked_consistency: MIC on the target images, `{weight: λ (0 = off; MIC 1.0), mask_ratio: 0.7, block_size: 64}`,
    against the EMA teacher's confidence-weighted pseudo-label of the unmasked image.

    `pl_selection=daformer` replaces the offline/centroid labels by DAFormer's: the teacher's argmax on the target
    crop, every pixel weighted by the fraction of confident pixels (max probability ≥ `pseudo_threshold`).
    """

    @classmethod
    def declared_inputs(cls, stage: Mapping[str, Any]) -> list[StageInput]:
        """Besides the warm-up's inputs, the offline pseudo-labels and the initial class centroids."""
        module = stage.get("module") or {}
        pseudo_labels = file_input(
            "earlier output",
            "offline pseudo-labels",
            stage.get("pseudo_labels"),
            "stage.pseudo_labels",
            "the pseudo_labels/ folder of a stage=pseudolabel run",
        )
        centroids = file_input(
            "earlier output",
            "initial class centroids",
            module.get("centroids_path"),
            "stage.centroids",
            "centroids.pt of a stage=centroids run",
        )
        return [*super().declared_inputs(stage), *pseudo_labels, *centroids]

    def __init__(self, *args: Any, centroids_path: str | None = None, centroid_momentum: float = 1e-4,
                 min_pixels: int = 5, pl_selection: str = "consensus", mix_weight: float = 1.0,
                 pseudo_threshold: float = 0.968, masked_consistency: Mapping[str, Any] | None = None,
                 **kwargs: Any) -> None:  # fmt: skip
        super().__init__(*args, **kwargs)
        if pl_selection not in PL_SELECTIONS:
            raise ValueError(f"pl_selection must be one of {PL_SELECTIONS}, got {pl_selection!r}")
        if pl_selection not in ("offline", "daformer") and not centroids_path:
            raise ValueError("stage=selftrain needs stage.centroids (a stage=centroids output)")
        self.mic = MaskedImageConsistency(**dict(masked_consistency or {}))
        init = (load_centroids(centroids_path, self.model.num_classes, self.model.feat_dim) if centroids_path
                else torch.zeros(self.model.num_classes, self.model.feat_dim))  # fmt: skip
        self.register_buffer("centroids", init)  # checkpointed; identical on every rank

    grad_forwards_per_image = 3  # cat(x_s, x̃_s), then the class-mixed target image

    def teacher_images(self, source_images: int, target_images: int) -> int:
        return max(2 * source_images, target_images)  # cat(x_s, x̃_s), then the target crops, each after cat(x_s, x̃_s)

    @torch.no_grad()
    def update_centroids(
        self, feats: list[torch.Tensor], labels: list[torch.Tensor], preds: list[torch.Tensor]
    ) -> None:
        """Per-image class means of each (features, labels, predictions) group, in order, gathered over ranks in rank
        order, applied as the reference's sequence of EMA updates."""
        classes, vectors, ok = ordered_class_vectors(feats, labels, preds, self.model.num_classes,
                                                     self.hparams.min_pixels)  # fmt: skip
        if self.trainer is not None and self.trainer.world_size > 1:
            vectors = self.all_gather(vectors).flatten(0, 1)
            ok = self.all_gather(ok).flatten(0, 1)
            classes = self.all_gather(classes).flatten(0, 1)
        self.centroids.copy_(sequential_ema(self.centroids, classes, vectors, self.hparams.centroid_momentum, ok))

    def step_losses(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        src, tgt = batch["source"], batch["target"]
        xs, ys = self.prep(src["image"]), src["label"]
        xt = self.prep(tgt["image"])
        mode = self.hparams.pl_selection
        if "pseudo_label" not in tgt and mode != "daformer":
            raise RuntimeError("self-training needs target pseudo-labels: set stage.pseudo_labels")
        b, size, ac = xs.shape[0], ys.shape[-2:], self.model.align_corners

        out = self.source_branch(xs, ys, xt)  # as the warm-up

        # target branch: dynamic selection from the teacher's features of the raw target crops
        teacher_t = self.teacher(xt)
        teacher_pl = confidence_weighted_pseudo_labels(teacher_t.logits, self.hparams.pseudo_threshold, size=size,
                                                       align_corners=ac)  # fmt: skip
        w_t = None
        if mode == "daformer":
            offline = y_cen = y_t = teacher_pl.label
            w_t = teacher_pl.weight
        else:
            offline = tgt["pseudo_label"]
            y_cen = nearest_centroid_labels(teacher_t.feat, self.centroids, offline.shape[-2:], ac)
            y_t = select_pseudo_labels(offline, y_cen, mode)

        # class-mix: source (un-augmented, un-translated) pasted onto the augmented target
        mask = sample_class_masks(ys, self.model.num_classes, self.generator)
        x_mix = mix_images(self.photometric(xt), xs, mask)
        y_mix = mix_labels(y_t, ys, mask)
        w_mix = None if w_t is None else mix_labels(w_t, torch.ones_like(w_t), mask)  # pasted source pixels: 1

        # online centroid updates: target (triple agreement), then source (teacher on the CrDoMix view)
        teacher_s = out["teacher"]
        if mode != "daformer":
            self.update_centroids([teacher_t.feat, teacher_s.feat[b:]], [y_t, ys],
                                  [teacher_t.logits.argmax(1), teacher_s.logits[b:].argmax(1)])  # fmt: skip

        loss_mix, mix_logits, _ = self.segmentation_pass(x_mix, y_mix, w_mix, self.generator)
        z_mix = upsample(mix_logits, size, ac)
        loss = out["loss_seg"] + self.hparams.mix_weight * loss_mix + self.hparams.kd_weight * out["loss_kd"]
        extra: dict[str, torch.Tensor] = {}
        if out["loss_fd"] is not None:
            loss, extra["loss_fd"] = loss + out["loss_fd"], out["loss_fd"]
        if self.mic.enabled:
            loss_mic = self.masked_consistency(xt, teacher_pl, self.generator)
            loss, extra["loss_mic"] = loss + loss_mic, loss_mic
        every = self.hparams.log_views_every_n_steps
        if every and self.global_step % every == 0:
            rows = [[to_uint8_hwc(xt[i]), to_uint8_hwc(x_mix[i]), *(self.labels.colorize(m[i].cpu().numpy())
                     for m in (offline, y_cen, y_t, y_mix, z_mix.argmax(1)))] for i in range(min(2, b))]  # fmt: skip
            log_image_rows(self.loggers, "train/target_views", rows, "target | class-mix | offline PL | centroid label"
                           " | selected PL | mixed label | prediction on mix", self.global_step)  # fmt: skip
        kept, agree = (y_t != IGNORE_INDEX).float().mean(), (offline == y_cen).float().mean()
        self.log_class_diagnostics(offline, y_t, tgt.get("label"))
        return {"loss": loss, "loss_src": out["loss_seg"], "loss_mix": loss_mix, "loss_kd": out["loss_kd"],
                "pl_kept": kept, "pl_agreement": agree, **extra}  # fmt: skip

    # MIC exactly as the DAFormer stage computes it (the same component, augmentation and fill colour)
    masked_consistency = DAFormerModule.masked_consistency

    def log_class_diagnostics(self, offline: torch.Tensor, selected: torch.Tensor, truth: torch.Tensor | None) -> None:
        """Per class: the fraction of its offline pseudo-label pixels the selection keeps and — when the benchmark
        provides target labels for diagnosis (the toy) — the precision of the selected pixels.

        Only on the steps whose logs the logger writes, and read back in one transfer: a value per class and step
        would make the device wait for the host 19–38 times per step."""
        if not self.logs_this_step():
            return
        stats = per_class_selection_stats(offline, selected, self.model.num_classes, truth)
        rows = list(stats.values())
        if truth is not None:  # unlabelled targets come with all-void labels: no precision then
            rows.append((truth != IGNORE_INDEX).any().float().expand_as(rows[0]))
        values = torch.stack(rows).tolist()
        if truth is not None and not values.pop()[0]:
            stats.pop("precision")
        for key, row in zip(stats, values):
            for name, v in zip(self.labels.classes, row):
                if v == v:  # not NaN: the class was present
                    self.log(f"train/pl_{key}/{name}", v, on_step=True, on_epoch=False, batch_size=offline.shape[0])
