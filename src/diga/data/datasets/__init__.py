"""Datasets in their official on-disk layouts. Each maps raw ids to the train-ids of a label set."""

from diga.data.datasets.acdc import ACDC
from diga.data.datasets.base import Sample, SegmentationDataset
from diga.data.datasets.bdd100k import BDD100K
from diga.data.datasets.cityscapes import Cityscapes, CityscapesSemi
from diga.data.datasets.dark_zurich import DarkZurich
from diga.data.datasets.folder import ImageFolder
from diga.data.datasets.gta5 import GTA5
from diga.data.datasets.mapillary import Mapillary
from diga.data.datasets.synthia import Synthia
from diga.data.datasets.toy import ToyDataset

__all__ = [
    "ACDC",
    "BDD100K",
    "GTA5",
    "Cityscapes",
    "CityscapesSemi",
    "DarkZurich",
    "ImageFolder",
    "Mapillary",
    "Sample",
    "SegmentationDataset",
    "Synthia",
    "ToyDataset",
]
