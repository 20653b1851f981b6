"""Judges of generated images: how the course decides that a generative model reached a result.

A generator's loss says little about its samples, so the projects that generate digits (s3-gan,
s4-paper-reproduction) judge the samples the way papers judge theirs, with a classifier trained
on the real data. ``DigitJudge`` is that classifier for scikit-learn's 1,797 real 8x8 digits
(shipped inside the wheel, so it works offline), and the measures built on it:

- **recognised**: the share of samples the classifier is at least 90% sure of, and that lie
  within distance 4.5 of a real training digit (a confident guess on noise does not count);
  ``classes`` lists the digits they cover (few classes means mode collapse);
- **Fréchet distance**: between Gaussians fitted to the classifier's hidden features of the
  samples and of the held-out digits: FID's idea, with this small classifier in place of
  Inception. Lower is better; it sees both quality and variety;
- **near copies**: the share of samples closer to a training digit than 90% of unseen real
  digits are (distance 1.5): a model that memorised its data is not generating.

The graders' hidden tests rebuild the judge from scikit-learn, never from a notebook's
variables; students can run the same judge on their own samples::

    from torchclass_course.judges import DigitJudge
    print(DigitJudge().judge(samples))   # samples: (n, 64) in [-1, 1]
"""

from dataclasses import dataclass

import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.nn import functional as F

TRAIN_DIGITS = 1500   # the first 1,500 of a fixed shuffle train; the other 297 are held out
CONFIDENT = 0.9       # classifier probability for a sample to count as recognised
NEAR_A_DIGIT = 4.5    # ... and its largest distance to a real training digit
NEAR_COPY = 1.5       # closer than this to a training digit: a (near) copy


def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's real digits: images (1797, 64) scaled from 0..16 to [-1, 1], labels."""
    real = load_digits()
    return torch.tensor(real.data, dtype=torch.float32) / 8 - 1, torch.tensor(real.target)


def digit_split(count: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the training and held-out digits (of `count`, default all of scikit-learn's):
    the same fixed shuffle everywhere."""
    count = len(load_digits().target) if count is None else count
    order = torch.randperm(count, generator=torch.Generator().manual_seed(0))
    return order[:TRAIN_DIGITS], order[TRAIN_DIGITS:]


@dataclass(frozen=True)
class DigitVerdict:
    recognised: float       # share of samples recognised (0..1)
    classes: list[int]      # the digits the recognised samples cover
    frechet: float          # Fréchet distance to the held-out digits' features
    copies: float           # share of samples that are near copies of training digits

    def __str__(self) -> str:
        return (f"{self.recognised:.0%} recognised, classes {self.classes}, Frechet distance "
                f"{self.frechet:.1f}, {self.copies:.0%} near copies")


class DigitJudge:
    """A small MLP classifier of the real digits (about 97% on the held-out ones), trained the
    same way every time without touching the caller's random state."""

    def __init__(self):
        self.images, self.labels = digits()
        self.train_idx, self.test_idx = digit_split(len(self.images))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            self.classifier = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
        optimizer = torch.optim.Adam(self.classifier.parameters(), lr=1e-2)
        x, y = self.images[self.train_idx], self.labels[self.train_idx]
        for _ in range(300):
            loss = F.cross_entropy(self.classifier(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        self.classifier.eval()
        with torch.no_grad():
            guesses = self.classifier(self.images[self.test_idx]).argmax(1)
        self.held_out_accuracy = (guesses == self.labels[self.test_idx]).float().mean().item()
        if self.held_out_accuracy < 0.9:
            raise RuntimeError(f"the digit judge reached only {self.held_out_accuracy:.0%} on "
                               "held-out digits (expected about 97%): is scikit-learn's copy intact?")

    def _flat(self, samples: torch.Tensor, clamp: bool = True) -> torch.Tensor:
        if isinstance(samples, torch.Tensor) and type(samples) is not torch.Tensor:
            # A subclass's __torch_function__ would run inside the judge and could answer for it.
            raise TypeError(f"digit samples must be a plain torch.Tensor, not a {type(samples).__name__}")
        x = torch.as_tensor(samples).detach().float().reshape(len(samples), -1)
        if x.shape[1] != 64:
            raise ValueError(f"digit samples must have 64 pixels each (8x8), got {x.shape[1]}")
        if not torch.isfinite(x).all():
            raise ValueError("some samples are NaN or infinite")
        return x.clamp(-1, 1) if clamp else x

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The classifier's hidden layer: what the Fréchet distance compares."""
        with torch.no_grad():
            return self.classifier[1](self.classifier[0](x)).double()

    def frechet(self, a: torch.Tensor, b: torch.Tensor) -> float:
        fa, fb = self.features(a), self.features(b)
        ma, mb = fa.mean(0), fb.mean(0)
        ca, cb = torch.cov(fa.T), torch.cov(fb.T)
        values, vectors = torch.linalg.eigh(ca)
        root_a = vectors @ torch.diag(values.clamp(min=0).sqrt()) @ vectors.T
        cross = torch.linalg.eigvalsh(root_a @ cb @ root_a).clamp(min=0).sqrt().sum()
        return ((ma - mb) ** 2).sum().item() + (ca.trace() + cb.trace() - 2 * cross).item()

    def recognised(self, samples: torch.Tensor, clamp: bool = True) -> tuple[float, list[int]]:
        """The share of samples recognised as digits, and the classes they cover. clamp=False
        judges pixels outside [-1, 1] as they are (far from every real digit), for a generator
        whose output range is part of what is graded."""
        x = self._flat(samples, clamp)
        ok, classes, _ = self._recognise(x)
        return ok.float().mean().item(), classes

    def _recognise(self, x: torch.Tensor):
        with torch.no_grad():
            confidence, cls = F.softmax(self.classifier(x), dim=1).max(dim=1)
            nearest = torch.cdist(x, self.images[self.train_idx]).min(dim=1).values
        ok = (confidence > CONFIDENT) & (nearest < NEAR_A_DIGIT)
        return ok, sorted(set(cls[ok].tolist())), nearest

    def judge(self, samples: torch.Tensor, clamp: bool = True) -> DigitVerdict:
        """All the measures for samples (n, 64) or (n, 8, 8) in [-1, 1] (clamped to it unless
        clamp=False); n of at least 100 keeps the Fréchet distance steady."""
        x = self._flat(samples, clamp)
        ok, classes, nearest = self._recognise(x)
        return DigitVerdict(recognised=ok.float().mean().item(), classes=classes,
                            frechet=self.frechet(x, self.images[self.test_idx]),
                            copies=(nearest < NEAR_COPY).float().mean().item())
