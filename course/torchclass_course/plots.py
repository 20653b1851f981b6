"""Small plotting helpers the lessons share, so a lesson's cells stay about PyTorch."""

import math


def show_images(images, labels=None, classes=None, ncols: int = 8, mean=None, std=None,
                title: str | None = None, size: float = 1.3):
    """Show a grid of images: a tensor (N, C, H, W) or (N, H, W), or a list of tensors/PIL images.

    ``labels`` (ints) are written under each image, through ``classes`` when given; ``mean`` and
    ``std`` undo a ``Normalize`` so normalised tensors still look like photos.
    """
    import matplotlib.pyplot as plt
    import numpy as np
    import torch

    arrays = []
    for image in images:
        if not isinstance(image, torch.Tensor):
            image = torch.as_tensor(np.asarray(image))
            if image.ndim == 3:  # PIL/numpy are H, W, C
                image = image.permute(2, 0, 1)
        image = image.detach().cpu().float()
        if image.ndim == 2:
            image = image.unsqueeze(0)
        if mean is not None and std is not None:
            image = image * torch.tensor(std).view(-1, 1, 1) + torch.tensor(mean).view(-1, 1, 1)
        if image.max() > 1.5:  # 0..255 pixels
            image = image / 255
        arrays.append(image.clamp(0, 1).permute(1, 2, 0).numpy())
    n = len(arrays)
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + 0.3), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        a = arrays[i]
        ax.imshow(a[..., 0] if a.shape[-1] == 1 else a, cmap="gray" if a.shape[-1] == 1 else None)
        if labels is not None:
            label = int(labels[i])
            ax.set_title(classes[label] if classes is not None else str(label), fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    plt.show()


def plot_curves(curves: dict, xlabel: str = "epoch", ylabel: str = "loss", title: str | None = None,
                logy: bool = False):
    """Plot several named series (e.g. ``{"train": [...], "test": [...]}``) on one axis."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for name, values in curves.items():
        values = [float(v) for v in values]
        ax.plot(range(1, len(values) + 1), values, label=name, marker="o" if len(values) < 30 else None)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    if title:
        ax.set_title(title)
    if len(curves) > 1:
        ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    plt.show()
