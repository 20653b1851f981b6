"""Pick where tensors live: the GPU when there is one, the CPU otherwise."""

import torch


def describe(device: torch.device) -> str:
    """One line a learner can read: which device, and for a GPU its name and CUDA version."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda ({torch.cuda.get_device_name(index)}, CUDA {torch.version.cuda})"
    return "cpu (no CUDA GPU found)"


def get_device(verbose: bool = True) -> torch.device:
    """``cuda`` if PyTorch can use a GPU here, else ``cpu``; prints which unless ``verbose=False``.

    Code written as ``model.to(get_device())`` runs unchanged on a laptop and on a GPU server.
    """
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if verbose:
        print(f"Using device: {describe(device)}")
    return device
