"""The dataset API of the seed guide: BaseDataset, configs, synthetic data, loaders."""

from datakiln.datasets.base import BaseDataset
from datakiln.datasets.rngs import Rngs

__all__ = ["BaseDataset", "Rngs"]
