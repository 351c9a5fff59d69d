"""Data: one Dataset representation, readers/writers per format, validation, caching, splits."""

from lanner.data.formats import detect_format, list_formats, read_dataset, write_dataset
from lanner.data.records import Dataset, ImageRecord, Issue

__all__ = [
    "Dataset",
    "ImageRecord",
    "Issue",
    "detect_format",
    "list_formats",
    "read_dataset",
    "write_dataset",
]
