"""Any timm backbone as a classifier, with a clear error when pretrained weights cannot be fetched."""

from __future__ import annotations

import timm
from torch import nn

from nnlab.errors import ModelError


def build_timm(name: str, in_chans: int, num_classes: int, pretrained: bool = False, dropout: float = 0.0,
               **kwargs) -> nn.Module:
    """`timm.create_model` with our channel and class counts (num_classes=0 gives pooled features)."""
    if not timm.list_models(name) and name not in timm.list_models():
        close = timm.list_models(f"*{name.split('.')[0]}*")[:5]
        raise ModelError(f"model.name: timm has no model {name!r}" + (f" (close: {', '.join(close)})" if close else ""))
    try:
        return timm.create_model(name, pretrained=pretrained, in_chans=in_chans, num_classes=num_classes,
                                 drop_rate=dropout, **kwargs)
    except Exception as exc:  # noqa: BLE001  (hub/network failures surface as many exception types)
        if pretrained:
            raise ModelError(f"could not fetch pretrained weights for timm:{name} ({type(exc).__name__}: {exc}); "
                             "offline? set model.pretrained=false or model.weights=<local file>") from None
        raise ModelError(f"timm:{name}: {exc}") from None
