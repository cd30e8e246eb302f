"""`diga.uda` against DAFormer (lhoyer/DAFormer) and MIC (lhoyer/MIC) on the same inputs.

The authors' files are imported from the checkouts with the mmcv/mmseg machinery they do not need for the compared
code replaced by stubs. DAFormer's RCS statistics script (tools/convert_datasets/gta.py) is taken from the DAFormer
checkout, or from MIC's unchanged copy ("Obtained from DAFormer") where the DAFormer checkout has no tools/.
"""

from __future__ import annotations

import json
import shutil
import types
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from diga.data.datasets import GTA5
from diga.data.fake_trees import Frame, write_gta5
from diga.data.rare_class_sampling import (
    DAFORMER_MIN_CROP_RATIO,
    DAFORMER_MIN_PIXELS,
    DAFORMER_TEMPERATURE,
    RareClassCropRetry,
    RareClassSampler,
    class_pixel_counts,
    rcs_class_probabilities,
    samples_with_class,
)
from diga.uda import (
    CITYSCAPES_THING_CLASSES,
    DAFORMER_FD_LAMBDA,
    DAFORMER_FD_SCALE_MIN_RATIO,
    DAFORMER_PSEUDO_THRESHOLD,
    MIC_LAMBDA,
    MIC_MASK_BLOCK_SIZE,
    MIC_MASK_RATIO,
    BlockMaskGenerator,
    ImageNetFeatureDistance,
    confidence_weighted_pseudo_labels,
    downscale_label_ratio,
    mask_images,
    masked_consistency_loss,
)
from tests import fakes
from tests.reference.util import load_module, reference_checkout

pytestmark = pytest.mark.reference


# --- stubs for the mm* machinery -----------------------------------------------------------------------------------
def _mod(name: str, **attrs: Any) -> types.ModuleType:
    m = types.ModuleType(name)
    m.__path__ = []  # importable as a package parent
    m.__dict__.update(attrs)
    return m


class _Registry:
    def register_module(self, *args: Any, **kwargs: Any) -> Any:
        return lambda cls: cls


def _noop(*args: Any, **kwargs: Any) -> None:
    return None


class _UDADecoratorStub:
    """Stands in for mmseg's BaseSegmentor-derived UDADecorator: only `_parse_losses` is used by the compared code."""

    def _parse_losses(self, losses: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        log_vars = {k: v.mean() for k, v in losses.items()}
        loss = sum(v for k, v in log_vars.items() if "loss" in k)
        return loss, {"loss": float(loss.detach()), **{k: float(v.detach()) for k, v in log_vars.items()}}


def _dacs_stubs(utils_module: types.ModuleType) -> dict[str, types.ModuleType]:
    """What DAFormer's and MIC's dacs.py import, none of which the compared methods use (except the real utils)."""
    return {
        "mmcv": _mod("mmcv", print_log=_noop),
        "matplotlib": _mod("matplotlib", pyplot=_mod("matplotlib.pyplot")),
        "matplotlib.pyplot": _mod("matplotlib.pyplot"),
        "mmseg": _mod("mmseg"),
        "mmseg.core": _mod("mmseg.core", add_prefix=lambda d, p: {f"{p}.{k}": v for k, v in d.items()}),
        "mmseg.models": _mod(
            "mmseg.models", UDA=_Registry(), build_segmentor=_noop, HRDAEncoderDecoder=type("H", (), {})
        ),
        "mmseg.models.segmentors": _mod("mmseg.models.segmentors"),
        "mmseg.models.segmentors.hrda_encoder_decoder": _mod(
            "mmseg.models.segmentors.hrda_encoder_decoder", crop=_noop
        ),
        "mmseg.models.uda": _mod("mmseg.models.uda"),
        "mmseg.models.uda.masking_consistency_module": _mod(
            "mmseg.models.uda.masking_consistency_module", MaskingConsistencyModule=object
        ),
        "mmseg.models.uda.uda_decorator": _mod(
            "mmseg.models.uda.uda_decorator", UDADecorator=_UDADecoratorStub, get_module=lambda m: m
        ),
        "mmseg.models.utils": _mod("mmseg.models.utils"),
        "mmseg.models.utils.dacs_transforms": _mod(
            "mmseg.models.utils.dacs_transforms",
            denorm=_noop,
            get_class_masks=_noop,
            get_mean_std=_noop,
            strong_transform=_noop,
        ),
        "mmseg.models.utils.visualization": _mod(
            "mmseg.models.utils.visualization", subplotimg=_noop, prepare_debug_out=_noop
        ),
        "mmseg.utils": _mod("mmseg.utils"),
        "mmseg.utils.utils": utils_module,
    }


@pytest.fixture(scope="module")
def daformer() -> Path:
    return reference_checkout("DAFormer")


@pytest.fixture(scope="module")
def mic() -> Path:
    return reference_checkout("MIC") / "seg"


@pytest.fixture(scope="module")
def daformer_utils(daformer: Path) -> types.ModuleType:
    return load_module(daformer / "mmseg/utils/utils.py", "daformer_utils")


@pytest.fixture(scope="module")
def daformer_dacs(daformer: Path, daformer_utils: types.ModuleType) -> types.ModuleType:
    return load_module(daformer / "mmseg/models/uda/dacs.py", "daformer_dacs", _dacs_stubs(daformer_utils))


@pytest.fixture(scope="module")
def mic_dacs(mic: Path) -> types.ModuleType:
    utils = load_module(mic / "mmseg/utils/utils.py", "mic_utils")
    return load_module(mic / "mmseg/models/uda/dacs.py", "mic_dacs", _dacs_stubs(utils))


def _config(path: Path) -> dict[str, Any]:
    """An mmseg config file is plain Python assigning dicts; run it in an empty namespace."""
    ns: dict[str, Any] = {}
    exec(compile(path.read_text(), str(path), "exec"), ns)
    return ns


# --- reference values in the authors' configs ----------------------------------------------------------------------
def test_defaults_are_the_authors_config_values(daformer: Path, mic: Path) -> None:
    base = _config(daformer / "configs/_base_/uda/dacs.py")["uda"]
    assert base["pseudo_threshold"] == DAFORMER_PSEUDO_THRESHOLD
    assert base["pseudo_weight_ignore_top"] == base["pseudo_weight_ignore_bottom"] == 0
    fd = _config(daformer / "configs/_base_/uda/dacs_a999_fdthings.py")["uda"]
    assert fd["imnet_feature_dist_lambda"] == DAFORMER_FD_LAMBDA
    assert tuple(fd["imnet_feature_dist_classes"]) == CITYSCAPES_THING_CLASSES
    assert fd["imnet_feature_dist_scale_min_ratio"] == DAFORMER_FD_SCALE_MIN_RATIO
    gta = _config(daformer / "configs/daformer/gta2cs_uda_warm_fdthings_rcs_croppl_a999_daformer_mitb5_s0.py")
    assert gta["uda"]["pseudo_weight_ignore_top"] == 15 and gta["uda"]["pseudo_weight_ignore_bottom"] == 120
    rcs = gta["data"]["train"]["rare_class_sampling"]
    assert (rcs["class_temp"], rcs["min_pixels"], rcs["min_crop_ratio"]) == (
        DAFORMER_TEMPERATURE,
        DAFORMER_MIN_PIXELS,
        DAFORMER_MIN_CROP_RATIO,
    )
    m = _config(mic / "configs/mic/gtaHR2csHR_mic_hrda.py")
    assert m["uda"]["mask_generator"]["mask_ratio"] == MIC_MASK_RATIO
    assert m["uda"]["mask_generator"]["mask_block_size"] == MIC_MASK_BLOCK_SIZE
    assert m["uda"]["mask_lambda"] == MIC_LAMBDA and m["uda"]["mask_mode"] == "separatetrgaug"
    # MIC (HRDA, 2× resolution): 4× the crop minimum; pseudo-label margins instead of DAFormer's row crop
    assert m["data"]["train"]["rare_class_sampling"]["min_crop_ratio"] == 4 * DAFORMER_MIN_CROP_RATIO
    assert m["data"]["train"]["target"]["crop_pseudo_margins"] == [30, 240, 30, 30]
    assert _config(mic / "configs/_base_/uda/dacs.py")["uda"]["pseudo_weight_ignore_top"] == 0


# --- 1. rare class sampling ----------------------------------------------------------------------------------------
N_IMAGES, RCS_MIN_PIXELS = 8, 60


def _label_maps() -> list[np.ndarray]:
    """Train-id maps (24×40): road, sky, a building of growing width, and objects of random size, each object class
    above the minimum (60 pixels) in at least one image and below it in others."""
    rng = np.random.default_rng(7)
    objects = ((13, 12), (11, 9), (12, 9), (17, 9), (6, 9))  # car, person, rider, motorcycle, traffic light
    maps = []
    for i in range(N_IMAGES):
        t = np.full((fakes.H, fakes.W), 0, np.uint8)  # road
        t[:6] = 10  # sky
        t[6:12, : 10 + 3 * i] = 2  # building of growing width
        for k, (c, max_side) in enumerate(objects):
            if k == i % len(objects):
                h, w = 8, 9  # 72 pixels: above the minimum
            elif rng.random() < 0.6:
                h, w = rng.integers(2, max_side + 1, size=2)
            else:
                continue
            y, x = rng.integers(0, fakes.H - h), rng.integers(0, fakes.W - w)
            t[y : y + h, x : x + w] = c
        t[-2:, :5] = 255
        maps.append(t)
    return maps


def _write_gta(root: Path) -> None:
    maps = _label_maps()
    write_gta5(root, len(maps), lambda dataset, split, i: Frame(fakes.image(i), maps[i]))


def _gta_script(daformer: Path, mic: Path) -> Path:
    own = daformer / "tools/convert_datasets/gta.py"
    return own if own.is_file() else mic / "tools/convert_datasets/gta.py"


@pytest.fixture(scope="module")
def rcs_setup(tmp_path_factory: pytest.TempPathFactory, daformer: Path, mic: Path) -> dict[str, Any]:
    """Our GTA5 dataset and DAFormer's statistics files (written by its own conversion script) on the same labels."""
    tmp = tmp_path_factory.mktemp("rcs")
    _write_gta(tmp / "GTA5")
    ref_root = tmp / "daformer_gta"
    shutil.copytree(tmp / "GTA5" / "labels", ref_root / "labels")
    gta = load_module(_gta_script(daformer, mic), "daformer_gta_convert", {"mmcv": _mod("mmcv")})
    files = sorted(str(p) for p in (ref_root / "labels").glob("*.png"))
    gta.save_class_stats(str(ref_root), [gta.convert_to_train_id(f) for f in files])
    uda = load_module(
        daformer / "mmseg/datasets/uda_dataset.py",
        "mmseg.datasets.uda_dataset",
        {
            "mmcv": _mod("mmcv", print_log=_noop),
            "mmseg": _mod("mmseg"),
            "mmseg.datasets": _mod("mmseg.datasets", CityscapesDataset=type("CityscapesDataset", (), {})),
            "mmseg.datasets.builder": _mod("mmseg.datasets.builder", DATASETS=_Registry()),
        },
    )
    ds = GTA5(tmp / "GTA5", label_set="cityscapes19")
    return {"ds": ds, "ref_root": ref_root, "uda": uda, "stats": class_pixel_counts(ds)}


class _DC:
    def __init__(self, data: torch.Tensor) -> None:
        self.data = data


class _RefSource:
    """DAFormer's source dataset interface: img_infos with seg_map names, items with `gt_semantic_seg.data`."""

    ignore_index, CLASSES, PALETTE = 255, tuple(range(19)), None

    def __init__(self, names: list[str], labels: list[np.ndarray] | None = None) -> None:
        self.img_infos = [{"ann": {"seg_map": f"{n}_labelTrainIds.png"}} for n in names]
        self.labels, self.script, self.calls = labels, None, 0
        self.requested: list[int] = []

    def __len__(self) -> int:
        return len(self.img_infos)

    def __getitem__(self, i: int) -> dict[str, Any]:
        self.requested.append(i)
        self.calls += 1
        if self.script is not None:  # scripted crops: the k-th call returns a crop with script[k] pixels of class 13
            n = self.script[min(self.calls - 1, len(self.script) - 1)]
            lab = torch.zeros(1, 8, 8, dtype=torch.long)
            lab.view(-1)[:n] = 13
            return {"gt_semantic_seg": _DC(lab), "draw": self.calls}
        return {"gt_semantic_seg": _DC(torch.from_numpy(self.labels[i].astype(np.int64))[None]), "draw": self.calls}


class _RefTarget(_RefSource):
    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"img_metas": None, "img": None}


def _ref_uda(setup: dict[str, Any], temperature: float, min_crop_ratio: float = 0.0) -> Any:
    ds = setup["ds"]
    names = [s.name for s in ds.samples]
    labels = [ds.load_label(s) for s in ds.samples]
    cfg = {
        "rare_class_sampling": {
            "class_temp": temperature,
            "min_crop_ratio": min_crop_ratio,
            "min_pixels": RCS_MIN_PIXELS,
        },
        "source": {"data_root": str(setup["ref_root"])},
    }
    return setup["uda"].UDADataset(_RefSource(names, labels), _RefTarget(names[:1]), cfg)


def test_rcs_statistics_match_daformers_conversion_script(rcs_setup: dict[str, Any]) -> None:
    ds, stats, ref_root = rcs_setup["ds"], rcs_setup["stats"], rcs_setup["ref_root"]
    ref = json.loads((ref_root / "sample_class_stats_dict.json").read_text())
    for i, s in enumerate(ds.samples):
        per_file = ref[str(ref_root / "labels" / f"{s.name}_labelTrainIds.png")]
        assert {int(c): n for c, n in per_file.items()} == {c: int(n) for c, n in enumerate(stats.counts[i]) if n}
    assert len(ref) == len(ds)


@pytest.mark.parametrize("temperature", [0.01, 0.1, 1.0])
def test_rcs_probabilities_and_image_lists_match_daformer(rcs_setup: dict[str, Any], temperature: float) -> None:
    stats = rcs_setup["stats"]
    ref_classes, ref_p = rcs_setup["uda"].get_rcs_class_probs(str(rcs_setup["ref_root"]), temperature)
    classes, p = rcs_class_probabilities(stats.class_totals(), temperature)
    ours = dict(zip(classes.tolist(), p.tolist()))
    theirs = dict(zip([int(c) for c in ref_classes], ref_p.tolist()))
    assert ours.keys() == theirs.keys()
    diff = max(abs(ours[c] - theirs[c]) for c in ours)
    print(f"RCS T={temperature}: max |p_ours − p_DAFormer| = {diff:.3e}")
    assert diff < 1e-5  # DAFormer: float32 (1 − f)/T amplifies f's rounding by 1/T; here float64

    ref = _ref_uda(rcs_setup, temperature)
    # same pixel count at the same size, so the scaled and the literal rule agree on these label maps
    for reference_size in (None, stats.sizes[0]):
        files = samples_with_class(stats, classes, RCS_MIN_PIXELS, reference_size)
        for c in classes.tolist():
            theirs_idx = [ref.file_to_idx[f] for f in ref.samples_with_class[c]]
            assert files[c].tolist() == theirs_idx, c


def test_rcs_sampling_distribution_matches_daformer(rcs_setup: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """Both draw (class, image) from p(c)·1/|F_c|: compare both empirical joints with the exact one (TV distance)."""
    temperature, n = 0.1, 4000
    ref = _ref_uda(rcs_setup, temperature)
    stats = rcs_setup["stats"]
    classes, p = rcs_class_probabilities(stats.class_totals(), temperature)
    files = samples_with_class(stats, classes, RCS_MIN_PIXELS, None)
    exact = {(c, int(i)): pc / len(files[c]) for c, pc in zip(classes.tolist(), p) for i in files[c]}
    drawn_classes: list[int] = []

    def recording_choice(a: Any, *args: Any, **kwargs: Any) -> Any:
        out = np.random.choice(a, *args, **kwargs)
        if "p" in kwargs:  # DAFormer's class draw (the image and target draws are uniform)
            drawn_classes.append(int(out))
        return out

    monkeypatch.setattr(
        rcs_setup["uda"], "np", types.SimpleNamespace(random=types.SimpleNamespace(choice=recording_choice))
    )
    np.random.seed(0)
    for _ in range(n):
        ref.get_rare_class_sample()
    theirs = Counter(zip(drawn_classes, ref.source.requested))
    sampler = RareClassSampler(classes, p, files, batch_size=n, total_steps=1, seed=0)
    ours = Counter((c, i) for i, _, c in sampler)
    tv_ours = 0.5 * sum(abs(ours[k] / n - v) for k, v in exact.items())
    tv_theirs = 0.5 * sum(abs(theirs[k] / n - v) for k, v in exact.items())
    print(f"RCS sampling, {n} draws: TV(ours, exact) = {tv_ours:.3f}, TV(DAFormer, exact) = {tv_theirs:.3f}")
    assert sum(ours.values()) == sum(theirs.values()) == n
    assert set(ours) <= set(exact) and set(theirs) <= set(exact)
    assert tv_ours < 0.05 and tv_theirs < 0.05


@pytest.mark.parametrize(
    "script",
    [[40], [0, 10, 30, 31], [30] * 20, [0] * 10 + [64], [0] * 9 + [31], [31, 0]],
)
def test_crop_retry_matches_daformer(rcs_setup: dict[str, Any], script: list[int]) -> None:
    """Scripted crops (pixels of class 13 per draw): same number of draws and the same returned crop."""
    ref = _ref_uda(rcs_setup, 0.01, min_crop_ratio=0.5)
    ref.rcs_classes, ref.rcs_classprob = [13], np.array([1.0])
    ref.samples_with_class = {13: [ref.source.img_infos[0]["ann"]["seg_map"]]}
    ref.source.script = script
    theirs = ref.get_rare_class_sample()

    class Scripted:
        calls = 0

        def __call__(self, **data: Any) -> dict[str, Any]:
            n = script[min(self.calls, len(script) - 1)]
            self.calls += 1
            mask = np.zeros((8, 8), np.uint8)
            mask.flat[:n] = 13
            return {"mask": mask, "draw": self.calls}

    tf = Scripted()
    ours = RareClassCropRetry(tf, min_pixels=RCS_MIN_PIXELS, min_crop_ratio=0.5)(mask=None, rare_class=13)
    assert (ours["draw"], tf.calls) == (theirs["draw"], ref.source.calls)


# --- 2. ImageNet feature distance ----------------------------------------------------------------------------------
class _Encoder(nn.Module):
    """Three stages (strides 2, 4, 8) returning the list of feature maps, like a diga backbone."""

    def __init__(self) -> None:
        super().__init__()
        self.stages = nn.ModuleList(
            [nn.Conv2d(3, 8, 2, stride=2), nn.Conv2d(8, 12, 2, stride=2), nn.Conv2d(12, 16, 2, stride=2)]
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for s in self.stages:
            x = torch.relu(s(x))
            out.append(x)
        return out


def _blocky_labels(seed: int, b: int = 2, size: int = 64, block: int = 8) -> torch.Tensor:
    """Random classes per block with noise and void, so that some blocks are pure, some mixed, some void."""
    g = torch.Generator().manual_seed(seed)
    n = -(-size // block)
    coarse = torch.randint(0, 20, (b, n, n), generator=g)
    lab = coarse.repeat_interleave(block, 1).repeat_interleave(block, 2)[:, :size, :size]
    noise = torch.rand(b, size, size, generator=g) < 0.2
    lab = torch.where(noise, torch.randint(0, 19, (b, size, size), generator=g), lab)
    return torch.where(lab == 19, 255, lab).unsqueeze(1)


@pytest.mark.parametrize("scale", [2, 4, 8])
@pytest.mark.parametrize("min_ratio", [0.75, 0.6])
def test_downscale_label_ratio_matches_daformer(daformer_utils: types.ModuleType, scale: int, min_ratio: float) -> None:
    for seed in range(3):
        lab = _blocky_labels(seed, size=64 + scale - 1)  # a size that is not a multiple of the scale
        theirs = daformer_utils.downscale_label_ratio(lab, scale, min_ratio, 19, 255)
        assert torch.equal(downscale_label_ratio(lab, scale, min_ratio, 19), theirs[:, 0])


def test_feature_distance_matches_daformer(daformer_dacs: types.ModuleType) -> None:
    torch.manual_seed(0)
    encoder = _Encoder()
    fd = ImageNetFeatureDistance(encoder, num_classes=19)
    ref = daformer_dacs.DACS.__new__(daformer_dacs.DACS)
    ref.enable_fdist, ref.num_classes = True, 19
    ref.fdist_lambda, ref.fdist_classes, ref.fdist_scale_min_ratio = 0.005, list(CITYSCAPES_THING_CLASSES), 0.75
    ref.imnet_model = types.SimpleNamespace(extract_feat=fd.encoder, eval=_noop)
    student = _Encoder()
    student.load_state_dict(encoder.state_dict())
    with torch.no_grad():
        for p in student.parameters():
            p.add_(0.05 * torch.randn_like(p))
    diffs = []
    for seed in range(3):
        img = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(seed))
        gt = _blocky_labels(seed + 10)
        feats = student(img)
        theirs, _ = ref.calc_feat_dist(img, gt, feats)
        g_theirs = torch.autograd.grad(theirs, feats[-1])[0]
        feats = student(img)
        ours = fd(img, feats, gt)
        g_ours = torch.autograd.grad(ours, feats[-1])[0]
        diffs += [abs(ours.item() - theirs.item()), (g_ours - g_theirs).abs().max().item()]
        assert ref.debug_fdist_mask.any()
        assert torch.equal(fd.mask(gt, feats[-1].shape[-2:]), ref.debug_fdist_mask.squeeze(1))
    print(f"FD: max |loss diff| and |grad diff| = {max(diffs):.3e}")
    assert max(diffs) < 1e-6
    ref.fdist_classes = None  # plain FD over all pixels
    fd_all = ImageNetFeatureDistance(encoder, classes=None)
    feats = student(img)
    assert fd_all(img, feats, gt).item() == pytest.approx(ref.calc_feat_dist(img, gt, feats)[0].item(), abs=1e-7)
    # no thing pixel at all: DAFormer's mean over nothing is NaN, ours 0
    ref.fdist_classes = list(CITYSCAPES_THING_CLASSES)
    stuff = torch.zeros_like(gt)
    assert torch.isnan(ref.calc_feat_dist(img, stuff, feats)[0]) and fd(img, feats, stuff).item() == 0.0


# --- 3. MIC masked image consistency -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mic_masking(mic: Path) -> types.ModuleType:
    wrappers = load_module(mic / "mmseg/ops/wrappers.py", "mic_wrappers")
    stubs = {"mmseg": _mod("mmseg"), "mmseg.ops": _mod("mmseg.ops", resize=wrappers.resize)}
    module = load_module(mic / "mmseg/models/utils/masking_transforms.py", "mic_masking_transforms", stubs)
    module.resize_fn = wrappers.resize
    return module


@pytest.mark.parametrize(("shape", "block"), [((2, 3, 64, 64), 32), ((2, 3, 64, 64), 16), ((1, 3, 96, 160), 64)])
def test_block_masks_match_mic(mic_masking: types.ModuleType, shape: tuple[int, ...], block: int) -> None:
    theirs_gen = mic_masking.BlockMaskGenerator(mask_ratio=0.7, mask_block_size=block)
    ours_gen = BlockMaskGenerator(mask_ratio=0.7, mask_block_size=block)
    imgs = torch.randn(shape)
    for seed in range(5):
        torch.manual_seed(seed)
        theirs = theirs_gen.generate_mask(imgs)
        ours = ours_gen(imgs, torch.Generator().manual_seed(seed))
        assert torch.equal(ours, theirs)
        torch.manual_seed(seed)
        assert torch.equal(ours_gen(imgs), theirs)  # global RNG, like MIC
        torch.manual_seed(seed)
        assert torch.equal(mask_images(imgs, ours), theirs_gen.mask_image(imgs))


@pytest.fixture(scope="module")
def mic_loss(mic: Path, mic_masking: types.ModuleType) -> dict[str, Any]:
    base = {"mmcv": _mod("mmcv"), "mmseg": _mod("mmseg"), "mmseg.models": _mod("mmseg.models")}
    utils = load_module(mic / "mmseg/models/losses/utils.py", "mmseg.models.losses.utils", base)
    ce = load_module(
        mic / "mmseg/models/losses/cross_entropy_loss.py",
        "mmseg.models.losses.cross_entropy_loss",
        {
            **base,
            "mmseg.models.builder": _mod("mmseg.models.builder", LOSSES=_Registry()),
            "mmseg.models.losses": _mod("mmseg.models.losses"),
            "mmseg.models.losses.utils": utils,
        },
    )
    mcm = load_module(
        mic / "mmseg/models/uda/masking_consistency_module.py",
        "mic_masking_consistency_module",
        {
            "mmseg": _mod("mmseg"),
            "mmseg.models": _mod("mmseg.models"),
            "mmseg.models.uda": _mod("mmseg.models.uda"),
            "mmseg.models.uda.teacher_module": _mod("mmseg.models.uda.teacher_module", EMATeacher=object),
            "mmseg.models.utils": _mod("mmseg.models.utils"),
            "mmseg.models.utils.dacs_transforms": _mod(
                "mmseg.models.utils.dacs_transforms",
                get_mean_std=lambda metas, dev: (None, None),
                strong_transform=_noop,
            ),
            "mmseg.models.utils.masking_transforms": mic_masking,
        },
    )
    return {
        "CrossEntropyLoss": ce.CrossEntropyLoss,
        "module": mcm.MaskingConsistencyModule,
        "resize": mic_masking.resize_fn,
    }


class _RefModel:
    """MIC's `model.forward_train` on a DAFormer-style head: logits at 1/4, mmseg decode-head loss (bilinear up)."""

    def __init__(self, net: nn.Module, loss: nn.Module, resize: Any) -> None:
        self.net, self.loss, self.resize = net, loss, resize
        self.debug_output: dict[str, Any] = {}

    def forward_train(self, img: torch.Tensor, img_metas: Any, gt: torch.Tensor, seg_weight: Any = None) -> Any:
        logits = self.resize(self.net(img), size=gt.shape[2:], mode="bilinear", align_corners=False)
        return {"decode.loss_seg": self.loss(logits, gt.squeeze(1), weight=seg_weight, ignore_index=255)}


@pytest.mark.parametrize("mask_lambda", [1, 0.5])
def test_masked_consistency_loss_matches_mic(
    mic_loss: dict[str, Any], mic_dacs: types.ModuleType, mask_lambda: float
) -> None:
    torch.manual_seed(0)
    net = nn.Conv2d(3, 19, 4, stride=4)
    model = _RefModel(net, mic_loss["CrossEntropyLoss"](), mic_loss["resize"])
    cfg = {
        "max_iters": 10,
        "color_jitter_strength": 0.2,
        "color_jitter_probability": 0.2,
        "mask_mode": "separatetrg",  # MIC's GTA config uses separatetrgaug: the same, after a colour augmentation
        "mask_alpha": "same",
        "mask_pseudo_threshold": "same",
        "mask_lambda": mask_lambda,
        "mask_generator": {"type": "block", "mask_ratio": 0.7, "mask_block_size": 16},
    }
    module = mic_loss["module"](require_teacher=False, cfg=cfg)
    ref = mic_dacs.DACS.__new__(mic_dacs.DACS)
    ref.pseudo_threshold = 0.968
    diffs = []
    for seed in range(3):
        g = torch.Generator().manual_seed(seed)
        src, trg = torch.randn(2, 3, 64, 64, generator=g), torch.randn(2, 3, 64, 64, generator=g)
        teacher_logits = 6 * torch.randn(2, 19, 64, 64, generator=g)
        pl, pw = ref.get_pseudo_label_and_weight(teacher_logits)
        pl[0, :4] = 255  # an ignored stripe, to check that it counts in the mean
        torch.manual_seed(100 + seed)
        with torch.no_grad():
            theirs = module(model, src, None, None, trg, None, None, pl, pw)["decode.loss_seg"]
            mask = BlockMaskGenerator(0.7, 16)(trg, torch.Generator().manual_seed(100 + seed))
            ours = masked_consistency_loss(net(mask_images(trg, mask)), pl, pw, weight=mask_lambda)
            unmasked = masked_consistency_loss(net(trg), pl, pw, weight=mask_lambda)
        diffs.append(abs(ours.item() - theirs.item()))
        assert abs(unmasked.item() - theirs.item()) > 1e-3  # the mask matters: the comparison is not vacuous
    print(f"MIC loss (λ={mask_lambda}): max |diff| = {max(diffs):.3e}")
    assert max(diffs) < 1e-6


# --- 4. confidence-weighted pseudo-labels --------------------------------------------------------------------------
def test_daformer_inline_pseudo_label_block_is_mics_method(daformer: Path) -> None:
    """DAFormer computes pseudo-labels inline in forward_train; MIC factored the same lines into two methods."""
    src = " ".join((daformer / "mmseg/models/uda/dacs.py").read_text().split())
    for line in (
        "ema_softmax = torch.softmax(ema_logits.detach(), dim=1)",
        "pseudo_prob, pseudo_label = torch.max(ema_softmax, dim=1)",
        "ps_large_p = pseudo_prob.ge(self.pseudo_threshold).long() == 1",
        "ps_size = np.size(np.array(pseudo_label.cpu()))",
        "pseudo_weight = torch.sum(ps_large_p).item() / ps_size",
        "pseudo_weight = pseudo_weight * torch.ones( pseudo_prob.shape, device=dev)",
        "pseudo_weight[:, :self.psweight_ignore_top, :] = 0",
        "pseudo_weight[:, -self.psweight_ignore_bottom:, :] = 0",
    ):
        assert line in src, line


@pytest.mark.parametrize(
    ("top", "bottom", "valid", "height"),
    [(0, 0, False, 32), (3, 12, False, 32), (15, 120, False, 144), (0, 0, True, 64)],
)
def test_pseudo_labels_match_daformer(
    mic_dacs: types.ModuleType, top: int, bottom: int, valid: bool, height: int
) -> None:
    ref = mic_dacs.DACS.__new__(mic_dacs.DACS)
    ref.pseudo_threshold, ref.psweight_ignore_top, ref.psweight_ignore_bottom = 0.968, top, bottom
    diffs = []
    for seed in range(3):
        g = torch.Generator().manual_seed(seed)
        logits = (2 + 3 * seed) * torch.randn(2, 19, height, 32, generator=g)
        valid_mask = None
        if valid:  # MIC's crop_pseudo_margins mask, cropped: the image's margins fall into this crop
            valid_mask = torch.ones(2, 1, height, 32)
            valid_mask[:, :, :5], valid_mask[:, :, -9:], valid_mask[0, :, :, :3] = 0, 0, 0
        pl_t, pw_t = ref.get_pseudo_label_and_weight(logits)
        pw_t = ref.filter_valid_pseudo_region(pw_t, valid_mask)
        pl, pw = confidence_weighted_pseudo_labels(logits, 0.968, top, bottom, valid_mask)
        assert torch.equal(pl, pl_t) and pw.dtype == pw_t.dtype
        diffs.append((pw - pw_t).abs().max().item())
        assert 0 < pw_t.max() < 1  # a non-trivial confident share
    print(f"pseudo weight (top={top}, bottom={bottom}, valid={valid}): max |diff| = {max(diffs):.3e}")
    assert max(diffs) == 0.0
