"""Half-class masks and mixing against hand-computed values."""

from __future__ import annotations

import pytest
import torch

from diga.mixing import mix_images, mix_labels, sample_class_masks
from diga.mixing.class_mask import present_values, select_half_classes


def test_present_values_include_void_column() -> None:
    y = torch.tensor([[[0, 2], [255, 2]]])
    assert present_values(y, 4).tolist() == [[True, False, True, False, True]]


def test_half_of_present_values_plus_void() -> None:
    # four values present incl. 255 → K = 2 drawn among {0,1,2,255}; 255 always ends up selected
    y = torch.tensor([0, 1, 2, 255]).repeat(16, 4, 1)
    g = torch.Generator().manual_seed(0)
    sel = select_half_classes(present_values(y, 3), g)
    assert sel[:, 3].all()
    drawn_classes = sel[:, :3].sum(1)
    # if 255 was one of the 2 draws, one class is selected; otherwise two
    assert set(drawn_classes.tolist()) <= {1, 2}
    assert {1, 2} == set(drawn_classes.tolist())  # both cases occur over 16 draws


def test_single_class_image_selects_only_void() -> None:
    y = torch.full((1, 3, 3), 5)
    y[0, 0, 0] = 255
    # U = {5, 255}: K = 1 → either 5 (then 255 added) or 255 alone
    outcomes = set()
    g = torch.Generator().manual_seed(1)
    for _ in range(20):
        m = sample_class_masks(y, 19, g)
        assert m[0, 0, 0]  # the void pixel is always taken from the foreground
        outcomes.add(int(m.sum()))
    assert outcomes == {1, 9}
    assert not sample_class_masks(torch.full((1, 2, 2), 3), 19, g).any()  # U = {3}: K = 0, no void


def test_selection_is_uniform_and_never_absent() -> None:
    y = torch.tensor([[0, 1, 2, 3, 4, 5]]).repeat(2000, 1, 1)  # 6 values, no void → K = 3
    g = torch.Generator().manual_seed(0)
    sel = select_half_classes(present_values(y, 10), g)
    assert (sel[:, :10].sum(1) == 3).all()
    assert not sel[:, 6:10].any()
    freq = sel[:, :6].float().mean(0)
    assert torch.allclose(freq, torch.full((6,), 0.5), atol=0.05)


def test_seeded_generator_reproduces() -> None:
    y = torch.randint(0, 7, (4, 8, 8))
    a = sample_class_masks(y, 7, torch.Generator().manual_seed(3))
    b = sample_class_masks(y, 7, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_mix_images_and_labels_hand_computed() -> None:
    bg = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    fg = torch.tensor([[[[10.0, 20.0], [30.0, 40.0]]]])
    m = torch.tensor([[[True, False], [False, True]]])
    assert mix_images(bg, fg, m).tolist() == [[[[10.0, 2.0], [3.0, 40.0]]]]
    assert mix_images(bg.expand(1, 3, 2, 2), fg.expand(1, 3, 2, 2), m).shape == (1, 3, 2, 2)
    lb, lf = torch.tensor([[[0, 1], [2, 255]]]), torch.tensor([[[5, 6], [7, 255]]])
    assert mix_labels(lb, lf, m).tolist() == [[[5, 1], [2, 255]]]


def test_crdomix_keeps_void_from_augmented_source() -> None:
    y = torch.tensor([[[0, 255], [1, 1]]])
    translated, augmented = torch.zeros(1, 3, 2, 2), torch.ones(1, 3, 2, 2)
    for seed in range(5):
        m = sample_class_masks(y, 2, torch.Generator().manual_seed(seed))
        mixed = mix_images(translated, augmented, m)
        assert mixed[0, :, 0, 1].eq(1).all()
    with pytest.raises(RuntimeError):
        mix_images(translated, augmented, torch.zeros(2, 2, 2, dtype=torch.bool) @ torch.zeros(2, 2))
