"""tandem's losses inside a PyTorch training loop (torch is an optional dependency).

    import tandem.torch
    criterion = tandem.torch.Loss("paper", memory=tandem.losses.Memory(1000))
    loss = criterion(F.normalize(img_emb), F.normalize(txt_emb), text_to_image,
                     image_ids=ids, caption_ids=cids)
    loss.backward()

The loss and its gradients are computed by the Rust library on the CPU in float32 (the
embeddings are copied to the host); the gradients flow back into the user's model as from
any other loss.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch

from . import losses as _losses

__all__ = ["Loss", "loss"]


def _host(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float32).contiguous().numpy()
    return np.asarray(x)


def _ids(x) -> Optional[np.ndarray]:
    if x is None:
        return None
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.int64).numpy()
    return np.asarray(x, dtype=np.int64)


class _Function(torch.autograd.Function):
    @staticmethod
    def forward(ctx, images, texts, text_to_image, kind, memory, image_ids, caption_ids, epoch, params):
        value, grad_images, grad_texts = _losses.loss(
            kind,
            _host(images),
            _host(texts),
            _ids(text_to_image),
            image_ids=_ids(image_ids),
            caption_ids=_ids(caption_ids),
            memory=memory,
            epoch=epoch,
            **params,
        )
        ctx.save_for_backward(
            torch.from_numpy(grad_images).to(images.device, images.dtype),
            torch.from_numpy(grad_texts).to(texts.device, texts.dtype),
        )
        return images.new_tensor(value)

    @staticmethod
    def backward(ctx, grad_output):
        grad_images, grad_texts = ctx.saved_tensors
        return (grad_output * grad_images, grad_output * grad_texts) + (None,) * 7


def loss(
    kind: str,
    images: torch.Tensor,
    texts: torch.Tensor,
    text_to_image,
    *,
    memory: Optional[_losses.Memory] = None,
    image_ids=None,
    caption_ids=None,
    epoch: int = 0,
    **params: Any,
) -> torch.Tensor:
    """The loss ``kind`` of a batch as a differentiable scalar tensor; see
    :func:`tandem.losses.loss` for the arguments."""
    return _Function.apply(
        images, texts, text_to_image, kind, memory, image_ids, caption_ids, epoch, params
    )


class Loss(torch.nn.Module):
    """A batch-wise loss as a module: ``Loss("paper", margin=0.1)``, ``Loss("info_nce")``, with
    an optional cross-batch ``memory`` (:class:`tandem.losses.Memory`) it keeps across calls.

    ``forward(images, texts, text_to_image, image_ids=None, caption_ids=None, epoch=0)``.
    """

    def __init__(self, kind: str = "paper", memory: Optional[_losses.Memory] = None, **params: Any):
        super().__init__()
        if kind not in _losses.KINDS:
            raise ValueError(f"unknown loss {kind!r}; choose one of {', '.join(_losses.KINDS)}")
        self.kind = kind
        self.memory = memory
        self.params = params

    def forward(self, images, texts, text_to_image, image_ids=None, caption_ids=None, epoch: int = 0):
        return loss(
            self.kind,
            images,
            texts,
            text_to_image,
            memory=self.memory,
            image_ids=image_ids,
            caption_ids=caption_ids,
            epoch=epoch,
            **self.params,
        )

    def extra_repr(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{self.kind!r}" + (f", {params}" if params else "")
