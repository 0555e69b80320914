"""The batch-wise losses as functions: numpy embeddings in, ``(loss, grad_images,
grad_texts)`` out, for any training loop. :mod:`tandem.torch` wraps them as a PyTorch loss.

Every function takes the batch's image embeddings ``[n, d]``, caption embeddings ``[m, d]`` and
``text_to_image`` (``[m]``, the batch row of each caption's image; several captions per image
are fine), plus the loss's parameters by name (as in ``tandem config``'s ``[loss]``: margin,
top_k, text_to_image, image_to_text, text_to_text, temperature, distance, miner, reducer, ...).

With ``memory=tandem.losses.Memory(capacity)``, every term also ranks against the embeddings of
the previous samples, and the batch is remembered after the call; pass ``image_ids`` and
``caption_ids`` (the rows' dataset ids) so a remembered copy of a sample is never its own
negative.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np

from . import _tandem
from ._config import assignments
from ._tandem import Memory

__all__ = ["Memory", "KINDS", "loss", "paper", "info_nce", "siglip", "vse_max", "vse_sum"]

KINDS = ("paper", "info_nce", "siglip", "vse_max", "vse_sum", "vse_warmup")

Result = Tuple[float, np.ndarray, np.ndarray]


def loss(
    kind: str,
    images,
    texts,
    text_to_image,
    *,
    image_ids=None,
    caption_ids=None,
    memory: Optional[Memory] = None,
    epoch: int = 0,
    **params: Any,
) -> Result:
    """The loss ``kind`` of a batch and its gradients with respect to both embedding
    matrices (float32). ``params`` are ``loss.*`` keys without the prefix."""
    sets = list(assignments({f"loss.{k}": v for k, v in params.items()}))
    return _tandem.loss(
        kind,
        images,
        texts,
        text_to_image,
        sets=sets,
        image_ids=image_ids,
        caption_ids=caption_ids,
        memory=memory,
        epoch=epoch,
    )


def paper(images, texts, text_to_image, **kwargs: Any) -> Result:
    """Wang, Li & Lazebnik 2016: top-K hinges in both directions plus the text→text
    structure-preserving term, on Euclidean distances (margin 0.05, K 10, weights 1.5 / 1 /
    0.05 by default)."""
    return loss("paper", images, texts, text_to_image, **kwargs)


def info_nce(images, texts, text_to_image, **kwargs: Any) -> Result:
    """Symmetric InfoNCE as CLIP: softmax cross-entropy both ways over similarities divided
    by ``temperature`` (default 0.07, fixed here)."""
    return loss("info_nce", images, texts, text_to_image, **kwargs)


def siglip(images, texts, text_to_image, **kwargs: Any) -> Result:
    """SigLIP: a sigmoid loss on every image–caption pair (temperature 0.1 and bias -10 by
    default, fixed here)."""
    return loss("siglip", images, texts, text_to_image, **kwargs)


def vse_max(images, texts, text_to_image, **kwargs: Any) -> Result:
    """VSE++ max-violation: the hardest negative both ways, summed (VSE++ itself scores
    with ``distance="cosine", margin=0.2``)."""
    return loss("vse_max", images, texts, text_to_image, **kwargs)


def vse_sum(images, texts, text_to_image, **kwargs: Any) -> Result:
    """VSE++ summed hinge: every negative both ways, summed."""
    return loss("vse_sum", images, texts, text_to_image, **kwargs)
