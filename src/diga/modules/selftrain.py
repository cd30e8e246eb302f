"""Stage `selftrain`: self-training with dynamic, threshold-free pseudo-label selection (METHOD.md §7).

Per step (REF order): EMA update (start of step) → source branch exactly as the warm-up (CrDoMix view, symmetric
distillation) → target branch: teacher features of the raw target crops, nearest-centroid labels, bilateral
consensus with the offline pseudo-label → DACS class-mix of the source onto the augmented target → online
centroid EMA updates (target first, then source; momentum 1e-4; all ranks apply the same all-gathered updates)
→ L = CE(student(x_s), y_s) + CE(student(x_mix), y_mix) + λ_KD · KD.

`pl_selection`: consensus (DiGA) | offline (offline pseudo-labels as they are — with a thresholded pseudo-label
stage this is the fixed-threshold baseline) | centroid (nearest-centroid labels only).
"""

from __future__ import annotations

from typing import Any

import torch

from diga.centroids import class_mean_vectors, load_centroids, nearest_centroid_labels, sequential_ema
from diga.data.labels import IGNORE_INDEX
from diga.losses import symmetric_distillation
from diga.mixing import mix_images, mix_labels, sample_class_masks
from diga.modules.base import upsample
from diga.modules.warmup import WarmupModule
from diga.pseudo_labels import bilateral_consensus, downsample_labels
from diga.utils.visualize import log_image_rows, to_uint8_hwc


class SelfTrainModule(WarmupModule):
    """Args (beyond WarmupModule): centroids_path, centroid_momentum (1e-4), min_pixels (5), target_beta (β of A(x_t),
    0.3 as the source's in REF), pl_selection, mix_weight (weight of the class-mix CE)."""

    def __init__(self, *args: Any, centroids_path: str | None = None, centroid_momentum: float = 1e-4,
                 min_pixels: int = 5, pl_selection: str = "consensus", mix_weight: float = 1.0,
                 **kwargs: Any) -> None:  # fmt: skip
        super().__init__(*args, **kwargs)
        if pl_selection not in ("consensus", "offline", "centroid"):
            raise ValueError(f"pl_selection must be consensus | offline | centroid, got {pl_selection!r}")
        if pl_selection != "offline" and not centroids_path:
            raise ValueError("stage=selftrain needs stage.module.centroids_path (a stage=centroids output)")
        init = (load_centroids(centroids_path, self.model.num_classes, self.model.feat_dim) if centroids_path
                else torch.zeros(self.model.num_classes, self.model.feat_dim))  # fmt: skip
        self.register_buffer("centroids", init)  # checkpointed; identical on every rank

    # --- centroid updates ------------------------------------------------------------------------------
    @torch.no_grad()
    def update_centroids(
        self, feats: list[torch.Tensor], labels: list[torch.Tensor], preds: list[torch.Tensor]
    ) -> None:
        """Per-image class means of each (features, labels, predictions) group, in order, gathered over ranks in rank
        order, applied as the reference's sequence of EMA updates."""
        vecs, valid = [], []
        for f, lab, pred in zip(feats, labels, preds):
            v, ok = class_mean_vectors(f, downsample_labels(lab, f.shape[-2:]), self.model.num_classes, pred,
                                       self.hparams.min_pixels)  # fmt: skip
            vecs.append(v.flatten(0, 1))
            valid.append(ok.flatten())
        vectors, ok = torch.cat(vecs), torch.cat(valid)  # (images×classes) in REF order: image-major, class-minor
        classes = torch.arange(self.model.num_classes, device=self.device).repeat(
            vectors.shape[0] // self.model.num_classes
        )
        if self.trainer is not None and self.trainer.world_size > 1:
            vectors = self.all_gather(vectors).flatten(0, 1)
            ok = self.all_gather(ok).flatten(0, 1)
            classes = self.all_gather(classes).flatten(0, 1)
        self.centroids.copy_(sequential_ema(self.centroids, classes[ok], vectors[ok].to(self.centroids.dtype),
                                            self.hparams.centroid_momentum))  # fmt: skip

    # --- pseudo-labels ---------------------------------------------------------------------------------
    def select_pseudo_labels(self, offline: torch.Tensor, feat_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(selected pseudo-label, nearest-centroid label) at label resolution."""
        centroid = nearest_centroid_labels(feat_t, self.centroids, offline.shape[-2:], self.model.align_corners)
        mode = self.hparams.pl_selection
        if mode == "consensus":
            return bilateral_consensus(offline, centroid), centroid
        if mode == "centroid":
            return centroid, centroid
        return offline, centroid

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        src, tgt = batch["source"], batch["target"]
        xs, ys = self.prep(src["image"]), src["label"]
        xt = self.prep(tgt["image"])
        if "pseudo_label" not in tgt:
            raise RuntimeError("self-training needs target pseudo-labels: set datamodule.target_pseudo_label_dir")
        offline = tgt["pseudo_label"]
        b, size, ac = xs.shape[0], ys.shape[-2:], self.model.align_corners

        # source branch (as the warm-up)
        views = self.second_view(xs, ys, xt)
        both = torch.cat([xs, views["mixed"]])
        out_s = self.model(both)
        z_t_src, f_t_src = self.teacher_forward(both)

        # target branch: dynamic selection
        z_t_tgt, f_t_tgt = self.teacher_forward(xt)
        y_t, y_cen = self.select_pseudo_labels(offline, f_t_tgt)

        # class-mix: source (un-augmented, un-translated) pasted onto the augmented target
        mask = sample_class_masks(ys, self.model.num_classes, self.generator)
        x_mix = mix_images(self.photometric(xt), xs, mask)
        y_mix = mix_labels(y_t, ys, mask)

        # online centroid updates: target (triple agreement), then source (teacher on the CrDoMix view)
        self.update_centroids([f_t_tgt, f_t_src[b:]], [y_t, ys], [z_t_tgt.argmax(1), z_t_src[b:].argmax(1)])

        z_s = upsample(out_s.logits, size, ac)
        z_t = upsample(z_t_src, size, ac)
        z_mix = upsample(self.model(x_mix).logits, size, ac)
        loss_src = self.seg_loss(z_s[:b], ys)
        loss_mix = self.seg_loss(z_mix, y_mix)
        loss_kd = symmetric_distillation(z_s[:b], z_s[b:], z_t[:b], z_t[b:], self.hparams.kd_reverse_weight,
                                         labels=ys if self.hparams.kd_mask_void else None)  # fmt: skip
        loss = loss_src + self.hparams.mix_weight * loss_mix + self.hparams.kd_weight * loss_kd
        kept = (y_t != IGNORE_INDEX).float().mean()
        agree = (offline == y_cen).float().mean()
        self.log_losses({"loss": loss, "loss_src": loss_src, "loss_mix": loss_mix, "loss_kd": loss_kd,
                         "pl_kept": kept, "pl_agreement": agree}, batch_size=b)  # fmt: skip
        every = self.hparams.log_views_every_n_steps
        if every and self.global_step % every == 0:
            rows = [[to_uint8_hwc(xt[i]), to_uint8_hwc(x_mix[i]), *(self.labels.colorize(m[i].cpu().numpy())
                     for m in (offline, y_cen, y_t, y_mix, z_mix.argmax(1)))] for i in range(min(2, b))]  # fmt: skip
            log_image_rows(self.logger, "train/target_views", rows, "target | class-mix | offline PL | centroid label |"
                           " selected PL | mixed label | prediction on mix", self.global_step)  # fmt: skip
        return loss
