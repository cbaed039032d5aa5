"""Small models shared by test files in several folders (tests/ is on sys.path via its
conftest.py)."""

from torch import nn


class TinyLSTM(nn.Module):
    """LSTM(4 -> 8) over a (B, T, 4) batch, a linear head on the last step: (B, 3)."""

    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(4, 8, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.rnn(x)[0][:, -1])
