"""A small CNN for scikit-learn's 8x8 digits (inputs in [0, 1], shape (1, 8, 8)).

Normalisation is NOT in the network: the recipe's [model] mean/std puts it inside audit's wrapper, so
attacks work in pixel space.
"""

from torch import nn


class DigitsCNN(nn.Module):
    def __init__(self, width: int = 16, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),  # 8x8 -> 4x4
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(2 * width * 16, 64), nn.ReLU(), nn.Linear(64, num_classes))

    def forward(self, x):
        return self.head(self.features(x))
