"""An MLP for the German credit data (tabular, 24 features after one-hot encoding).

The feature standardisation is part of the module (buffers saved with the weights), as a production
tabular model would carry its scaler; the recipe therefore sets no mean/std and no input bounds.
"""

import torch
from torch import nn


class CreditMLP(nn.Module):
    def __init__(self, num_features: int = 24, hidden: int = 32, num_classes: int = 2):
        super().__init__()
        self.register_buffer("mean", torch.zeros(num_features))
        self.register_buffer("std", torch.ones(num_features))
        self.net = nn.Sequential(nn.Linear(num_features, hidden), nn.ReLU(), nn.Dropout(0.1),
                                 nn.Linear(hidden, num_classes))

    def forward(self, x):
        return self.net((x - self.mean) / self.std)
