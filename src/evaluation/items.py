"""Finding an evaluated image in its dataset by id (the maps file and per_image.csv name
images by id; the figures and `stage=masks` need the image and its ground truth again)."""

from __future__ import annotations

from torch.utils.data import Dataset, Subset


def item_index(dataset: Dataset) -> dict[str, int]:
    """Position of each image id in the dataset (a Subset maps through its indices)."""
    if isinstance(dataset, Subset):
        inner = item_index(dataset.dataset)
        wanted = {position: i for i, position in enumerate(dataset.indices)}
        return {image_id: wanted[pos] for image_id, pos in inner.items() if pos in wanted}
    ids = getattr(dataset, "ids", None)
    if ids is None:
        ids = [dataset[i]["id"] for i in range(len(dataset))]
    return {image_id: i for i, image_id in enumerate(ids)}
