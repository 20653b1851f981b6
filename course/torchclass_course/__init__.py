"""The course helper library every torchclass notebook imports.

- ``data``: datasets and pretrained models, from the classroom's staged data directory when the
  instructor has staged it (``make data``), else from offline sources that installed packages ship.
- ``device``: ``get_device()`` picks the GPU when there is one.
- ``checks``: self-checks for lesson exercises.
- ``plots``: small plotting helpers (image grids, loss curves).
"""

__all__ = ["checks", "data", "device", "plots"]
