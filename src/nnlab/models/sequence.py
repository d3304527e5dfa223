"""Stroke-sequence models for `data.input = "sequence"` (see `nnlab.strokes.sequence` for the input).

`stroke_rnn` is Google's TensorFlow tutorial for Quick, Draw! ("Recurrent Neural Networks for Drawing
Classification"): 1-D convolutions (48, 64, 96 filters; kernels 5, 5, 3) over the point sequence, three
bidirectional LSTM layers of 128 units, their outputs summed over time, a linear classifier.
`stroke_gru` is the same with GRU cells (fewer parameters, faster on CPUs).

The backward direction runs a forward RNN over each sequence reversed within its own length, so
padding never reaches a real point: a drawing's logits do not depend on the batch it is in, and the
model exports to ONNX without packed sequences.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from nnlab.errors import ModelError
from nnlab.models.registry import register_model
from nnlab.strokes.sequence import FEATURES

_CELLS = {"lstm": nn.LSTM, "gru": nn.GRU}


def reverse_within(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B, T, C): each sequence's first `lengths[b]` steps in reverse order, the padding left in place."""
    t = torch.arange(x.shape[1], device=x.device)[None, :]
    idx = torch.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)
    return torch.gather(x, 1, idx[:, :, None].expand(-1, -1, x.shape[2]))


class StrokeRNN(nn.Module):
    """Conv1d stack -> bidirectional RNN layers -> sum over valid steps -> linear (logits)."""

    def __init__(self, in_chans: int = FEATURES, num_classes: int = 10, conv_filters: Sequence[int] = (48, 64, 96),
                 conv_kernels: Sequence[int] = (5, 5, 3), rnn_hidden: int = 128, rnn_layers: int = 3,
                 cell: str = "lstm", dropout: float = 0.0) -> None:
        super().__init__()
        if in_chans != FEATURES:
            raise ModelError(f"a stroke-sequence model takes {FEATURES} features per point (data.input = "
                             f"'sequence'), got {in_chans} input channels")
        if len(conv_filters) != len(conv_kernels):
            raise ModelError(f"model.conv_filters {list(conv_filters)} and model.conv_kernels "
                             f"{list(conv_kernels)} need the same length")
        self.convs = nn.ModuleList()
        width = FEATURES - 1  # the valid column steers, it is not a feature
        for filters, kernel in zip(conv_filters, conv_kernels, strict=True):
            self.convs.append(nn.Conv1d(width, filters, kernel, padding=kernel // 2))
            width = filters
        rnn = _CELLS[cell]
        self.forward_rnns = nn.ModuleList()
        self.backward_rnns = nn.ModuleList()
        for _ in range(rnn_layers):
            self.forward_rnns.append(rnn(width, rnn_hidden, batch_first=True))
            self.backward_rnns.append(rnn(width, rnn_hidden, batch_first=True))
            width = 2 * rnn_hidden
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        valid = x[..., FEATURES - 1:]
        lengths = valid[..., 0].sum(1).long()
        h = x[..., :FEATURES - 1].transpose(1, 2)
        mask = valid.transpose(1, 2)
        for conv in self.convs:  # zero the padding after every layer: the next one must see zeros there
            h = torch.relu(conv(h)) * mask
        h = h.transpose(1, 2)
        for fwd, bwd in zip(self.forward_rnns, self.backward_rnns, strict=True):
            ahead = fwd(h)[0]
            behind = reverse_within(bwd(reverse_within(h, lengths))[0], lengths)
            h = self.dropout(torch.cat([ahead, behind], dim=2)) * valid
        return self.fc(h.sum(1))


@register_model
def stroke_rnn(in_chans: int = FEATURES, num_classes: int = 10, image_size: int = 0,
               conv_filters: Sequence[int] = (48, 64, 96), conv_kernels: Sequence[int] = (5, 5, 3),
               rnn_hidden: int = 128, rnn_layers: int = 3, dropout: float = 0.0) -> StrokeRNN:
    """Google's Quick, Draw! RNN: conv1d 48/64/96 (kernels 5/5/3) + 3 bidirectional LSTM(128), summed over time."""
    return StrokeRNN(in_chans, num_classes, conv_filters, conv_kernels, rnn_hidden, rnn_layers, "lstm", dropout)


@register_model
def stroke_gru(in_chans: int = FEATURES, num_classes: int = 10, image_size: int = 0,
               conv_filters: Sequence[int] = (48, 64, 96), conv_kernels: Sequence[int] = (5, 5, 3),
               rnn_hidden: int = 128, rnn_layers: int = 3, dropout: float = 0.0) -> StrokeRNN:
    """`stroke_rnn` with bidirectional GRU layers instead of LSTMs."""
    return StrokeRNN(in_chans, num_classes, conv_filters, conv_kernels, rnn_hidden, rnn_layers, "gru", dropout)
