"""`benchmarks/backbones.py` at reduced size: a real warm-up and self-training step per row, measured and tabulated."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.mark.slow(seconds=60)
def test_one_warmup_and_one_selftraining_row_are_measured(tmp_path: Path) -> None:
    from benchmarks.backbones import fake_pseudo_labels, rows_to_run, run_row, stage_overrides, table
    from benchmarks.fake_weights import write_weights

    from diga.data.fake_trees import write_street_trees

    assert rows_to_run(["MiT-B5 + DAFormer"], None) == [("MiT-B5 + DAFormer", s, o) for s in ("warmup", "selftrain")
                                                        for o in ("fp32", "bf16")]  # fmt: skip
    assert len(rows_to_run(["DINOv2 ViT-L/14 + DAFormer"], None)) == 8  # + checkpointing, with and without bf16
    data = tmp_path / "data"
    write_street_trees(data, 0.125)
    weights = write_weights(tmp_path / "weights")["vgg19"].parent
    rows = []
    for stage in ("warmup", "selftrain"):
        overrides = stage_overrides("MiT-B5 + DAFormer", stage, "fp32", data, weights, 0.125)
        # small, same code path
        overrides += ["model=segformer_b0", "model.head.name=daformer", "model.pretrained=null"]
        if stage == "selftrain":
            pseudo = fake_pseudo_labels(overrides, tmp_path / "pl")
            assert len(list(pseudo.glob("*.png"))) == 32  # every fake Cityscapes training image
            overrides.append(f"stage.pseudo_labels={pseudo}")
        row = run_row(overrides, tmp_path / stage, 2, 1, stage, min_available_gb=None)
        assert row["steps_timed"] == 1 and row["s_per_step"] > 0 and row["peak_rss_gb"] > row["rss_before_gb"]
        assert row["images_per_step"] == 3 and row["schedule_steps"] == 80000  # gta2cs: 1 + 2, 2 + 1 source images
        assert row["estimate_gb"] > 0 and row["crop"] == [64, 112]  # 512×896 at scale 0.125
        rows.append({"case": "MiT-B0", "stage": stage, "option": "fp32", **row})
    capped = run_row(overrides, tmp_path / "capped", 2, 1, "selftrain", min_available_gb=1e6)  # more than any machine
    assert capped["stopped_at_gb"] > 0 and capped["estimate_gb"] > 0
    assert not {"s_per_step", "peak_rss_gb"} & set(capped)  # no figure of the describing process stands for the step
    rows.append({"case": "MiT-B0", "stage": "selftrain", "option": "capped", **capped})
    text = table(rows)
    assert text.count("\n") == 4 and "80000 steps" in text and "GB RSS (stopped: memory full)" in text


def test_earlier_sittings_are_tabulated_together(tmp_path: Path) -> None:
    """`--tabulate`: measured and capped rows of several result files in one table; failed rows stay in their file."""
    import json

    from benchmarks.backbones import in_reading_order, saved_rows, table

    base = {"stage": "warmup", "estimate_gb": 10.0, "schedule_steps": 80000, "crop": [512, 896]}
    measured = {**base, "case": "A", "option": "fp32", "s_per_step": 360.0, "img_per_s": 3 / 360, "peak_rss_gb": 15.0}
    capped = {**base, "case": "B", "option": "fp32", "stopped_at_gb": 21.2}
    (tmp_path / "one.json").write_text(json.dumps({"scale": 1.0, "rows": [measured, {"case": "C", "failed": "x"}]}))
    (tmp_path / "two.json").write_text(json.dumps({"scale": 0.5, "rows": [capped]}))
    rows = saved_rows([tmp_path / "one.json", tmp_path / "two.json"])
    assert [(r["case"], r["scale"]) for r in rows] == [("A", 1.0), ("B", 0.5)]
    text = table(rows).splitlines()
    assert len(text) == 4 and "| 360 | 0.0083 | 15.0 GB RSS | 10.0 GB | 15.0 GB | 8,000 h (80000 steps) |" in text[2]
    assert "over 21.2 GB RSS (stopped: memory full)" in text[3] and "does not fit here" in text[3]
    late = [{"case": "HRNet-W48 + OCR", "stage": "warmup", "option": "bf16", "scale": 1.0},
            {"case": "MiT-B5 + DAFormer", "stage": "selftrain", "option": "fp32", "scale": 1.0},
            {"case": "MiT-B5 + DAFormer", "stage": "warmup", "option": "bf16", "scale": 1.0},
            {"case": "MiT-B5 + DAFormer", "stage": "warmup", "option": "fp32", "scale": 1.0},
            {"case": "MiT-B5 + DAFormer", "stage": "warmup", "option": "fp32", "scale": 0.5}]  # fmt: skip
    ordered = [(r["case"][:3], r["stage"], r["option"], r["scale"]) for r in in_reading_order(late)]
    assert ordered == [("MiT", "warmup", "fp32", 0.5), ("MiT", "warmup", "fp32", 1.0), ("MiT", "warmup", "bf16", 1.0),
                       ("MiT", "selftrain", "fp32", 1.0), ("HRN", "warmup", "bf16", 1.0)]  # fmt: skip


def test_a_table_says_which_machines_its_rows_come_from(tmp_path: Path) -> None:
    """Speeds of two machines must not be read as one: the caption names each machine, and files from before the
    `machine` field say that it is not recorded."""
    import json

    from benchmarks.backbones import machines_caption, saved_rows
    from benchmarks.device import machine

    row = {"case": "A", "stage": "warmup", "option": "fp32", "estimate_gb": 1.0, "schedule_steps": 1, "crop": [8, 8],
           "s_per_step": 1.0, "img_per_s": 1.0, "peak_rss_gb": 1.0}  # fmt: skip
    amx = {"cpu": "Xeon", "cpu_count": 2, "cpu_isa_flags": ["avx2", "avx512_bf16", "amx_bf16"],
           "cpu_capability": "AVX512", "gpus": [], "torch": "2"}  # fmt: skip
    (tmp_path / "old.json").write_text(json.dumps({"scale": 1.0, "rows": [row]}))
    (tmp_path / "new.json").write_text(json.dumps({"scale": 1.0, "machine": amx, "rows": [row, row]}))
    caption = machines_caption(saved_rows([tmp_path / "old.json", tmp_path / "new.json"])).splitlines()
    assert caption == ["Measured on: Xeon × 2, ATen AVX512, avx512_bf16 amx_bf16",
                       "Measured on: machine not recorded in the file"]  # fmt: skip
    here = machine()
    assert here["cpu_count"] >= 1 and here["cpu_capability"] and isinstance(here["cpu_isa_flags"], list)
