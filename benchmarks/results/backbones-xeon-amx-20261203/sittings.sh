#!/bin/bash
# The sittings behind benchmarks/results/backbones-xeon-amx-20261203/, in the order they ran (3 December 2026, a
# 2-core Intel Xeon with AVX-512 and AMX, 23 GiB RAM, no GPU), one row per process and per result file, with the
# machine to themselves. Run from the repository root; `--tabulate` on the folder prints the table in docs/models.md.
row() { python -m benchmarks.backbones --cases "$1" --stages "$2" --options "$3" --steps 1 --skip 0; }

row "MiT-B5 + DAFormer" selftrain "fp32 + checkpointing"
row "MiT-B5 + DAFormer" warmup "bf16 + checkpointing"
row "HRNet-W48 + OCR" warmup "bf16 + checkpointing"
row "MiT-B5 + DAFormer" selftrain "bf16 + checkpointing"
row "DINOv2 ViT-B/14 + DAFormer" selftrain "fp32 + checkpointing"
row "DINOv2 ViT-B/14 + DAFormer" warmup "bf16 + checkpointing"
row "DINOv2 ViT-B/14 + DAFormer" selftrain "bf16 + checkpointing"
row "DINOv2 ViT-L/14 + DAFormer" warmup "fp32 + checkpointing"
row "DINOv2 ViT-L/14 + DAFormer" warmup "bf16 + checkpointing"
row "DINOv2 ViT-L/14 + DAFormer" warmup "fp32"
row "DINOv2 ViT-L/14 + DAFormer" selftrain "bf16 + checkpointing"
row "DINOv2 ViT-L/14 + DAFormer" warmup "bf16"
row "DINOv2 ViT-L/14 + DAFormer" selftrain "fp32 + checkpointing"
# these five also ran earlier in the sitting, while another memory-hungry process shared the machine: three were
# stopped by the memory floor at 0.7-7.6 GB and two were timed with a second process on the cores; those five
# files were discarded and the rows measured again here, alone
row "HRNet-W48 + OCR" selftrain "fp32 + checkpointing"
row "HRNet-W48 + OCR" selftrain "bf16 + checkpointing"
row "DINOv2 ViT-B/14 + DAFormer" warmup "fp32 + checkpointing"
row "MiT-B5 + DAFormer" warmup "fp32 + checkpointing"
row "HRNet-W48 + OCR" warmup "fp32 + checkpointing"
# bf16 without checkpointing, for the networks whose estimate fits this machine: what checkpointing costs and saves
row "MiT-B5 + DAFormer" warmup "bf16"
row "HRNet-W48 + OCR" warmup "bf16"
row "DINOv2 ViT-B/14 + DAFormer" warmup "bf16"
