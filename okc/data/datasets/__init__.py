"""Built-in datasets; importing this package registers them in ``okc.registry.DATASETS``."""

from okc.data.datasets import (
    cifar,
    classification,
    coco,
    contrastive,
    detection,
    folder,
    multihead,
    retrieval,
    segmentation,
    shapes,
    shapes_multihead,
    sop,
    sweet_pepper,
)
from okc.data.datasets.base import ImageDataset
from okc.data.datasets.cifar import CIFAR10, CIFAR100
from okc.data.datasets.classification import ImageClassificationDataset
from okc.data.datasets.coco import COCODetection
from okc.data.datasets.contrastive import ContrastiveShapes, UnsupervisedContrastiveDataset
from okc.data.datasets.detection import DetectionDataset
from okc.data.datasets.folder import ImageFolder
from okc.data.datasets.multihead import MultiHeadImageDataset
from okc.data.datasets.retrieval import RetrievalDataset
from okc.data.datasets.segmentation import ImageSegmentationDataset
from okc.data.datasets.shapes import Shapes
from okc.data.datasets.shapes_multihead import MultiHeadShapes
from okc.data.datasets.sop import SOP, TRIPLET_SOP
from okc.data.datasets.sweet_pepper import SweetPepper

__all__ = [
    "CIFAR10",
    "CIFAR100",
    "SOP",
    "TRIPLET_SOP",
    "COCODetection",
    "ContrastiveShapes",
    "DetectionDataset",
    "ImageClassificationDataset",
    "ImageDataset",
    "ImageFolder",
    "ImageSegmentationDataset",
    "MultiHeadImageDataset",
    "MultiHeadShapes",
    "RetrievalDataset",
    "Shapes",
    "SweetPepper",
    "UnsupervisedContrastiveDataset",
    "cifar",
    "classification",
    "coco",
    "contrastive",
    "detection",
    "folder",
    "multihead",
    "retrieval",
    "segmentation",
    "shapes",
    "shapes_multihead",
    "sop",
    "sweet_pepper",
]
