"""Attention rollout and its gradient-weighted form: saliency read from a ViT's attention.

* :class:`AttentionRollout` (Abnar & Zuidema, "Quantifying Attention Flow in Transformers",
  ACL 2020): each layer's attention, heads fused (mean), plus the identity for the residual
  connection and renormalized (``0.5 A + 0.5 I``), multiplied from the first layer to the last;
  the map is the class token's row over the patch tokens. Class-agnostic, one forward pass.
* :class:`GradientRollout` (Chefer, Gur & Wolf, "Generic Attention-model Explainability for
  Interpreting Bi-Modal and Encoder-Decoder Transformers", ICCV 2021): each layer's attention
  weighted by the gradient of the target logit with respect to it, ``Ā = E_h[(∇A ⊙ A)^+]``, and
  accumulated as ``R ← R + Ā R`` from ``R = I``; the map is ``R``'s class-token row over the patch
  tokens. Class-specific, one forward and one backward pass.

The attention matrices are recorded during the classifier's own forward pass. timm's
``Attention`` computes them with a fused kernel that never forms the matrix, so its explicit path
is switched on for the pass (``fused_attn = False``: the same math) and the matrix read where it
enters ``attn_drop``; PyTorch's ``nn.MultiheadAttention`` (torchvision's ViT) is run for the pass
by an explicit implementation of the same computation (checked equal in the tests), because the
weights it returns are a copy off the gradient's path. Only global self-attention over one token
sequence is read (ViT, DeiT, register tokens); windowed attention (Swin) is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from masksal.classifiers import Classifier
from masksal.explainers.base import ClassifierExplainer, Explanation
from masksal.taps import token_grid

HEAD_FUSIONS = ("mean", "max", "min")


def attention_layers(model: nn.Module) -> list[str]:
    """Names of the self-attention modules ``recorded_attention`` reads, in definition order."""
    return [name for name, m in model.named_modules() if _is_timm_attention(m) or isinstance(m, nn.MultiheadAttention)]


def _is_timm_attention(m: nn.Module) -> bool:
    return isinstance(vars(m).get("fused_attn"), bool) and isinstance(getattr(m, "attn_drop", None), nn.Module)


def _explicit_mha(m: nn.MultiheadAttention, record: list[Tensor]) -> Callable[..., tuple[Tensor, Tensor | None]]:
    """A forward for ``m`` that computes self-attention explicitly and records the matrix
    ``(B, heads, N, N)``; same signature and result as ``nn.MultiheadAttention.forward``."""

    def forward(query: Tensor, key: Tensor, value: Tensor, key_padding_mask: Tensor | None = None,
                need_weights: bool = True, attn_mask: Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[Tensor, Tensor | None]:
        if (query is not key or key is not value or key_padding_mask is not None or attn_mask is not None
                or is_causal or not m._qkv_same_embed_dim or m.bias_k is not None or m.add_zero_attn):
            raise ValueError("attention rollout reads unmasked self-attention (query = key = value); this "
                             "nn.MultiheadAttention is used otherwise")
        x = query if m.batch_first else query.transpose(0, 1)
        b, n, e = x.shape
        heads = m.num_heads
        q, k, v = F.linear(x, m.in_proj_weight, m.in_proj_bias).reshape(b, n, 3, heads, e // heads) \
            .permute(2, 0, 3, 1, 4).unbind(0)
        attn = torch.softmax((q * (e // heads) ** -0.5) @ k.transpose(-2, -1), dim=-1)
        record.append(attn)
        out = m.out_proj((attn @ v).transpose(1, 2).reshape(b, n, e))
        if not m.batch_first:
            out = out.transpose(0, 1)
        weights = (attn.mean(1) if average_attn_weights else attn) if need_weights else None
        return out, weights

    return forward


@contextmanager
def recorded_attention(model: nn.Module) -> Iterator[list[Tensor]]:
    """Collect the attention matrices ``(B, heads, N, N)`` of every self-attention layer of
    ``model`` during the forward passes run inside the block, in the order they run.

    Raises:
        ValueError: the model has no timm ``Attention`` or ``nn.MultiheadAttention`` layer.
    """
    record: list[Tensor] = []
    handles: list[Any] = []
    fused: list[tuple[nn.Module, bool]] = []
    patched: list[tuple[nn.Module, Any]] = []
    try:
        for _, m in model.named_modules():
            if _is_timm_attention(m):
                fused.append((m, bool(vars(m)["fused_attn"])))
                vars(m)["fused_attn"] = False  # the explicit path forms the matrix (same math as the kernel)

                def hook(_m: nn.Module, _i: Any, out: Tensor) -> None:
                    record.append(out)
                handles.append(m.get_submodule("attn_drop").register_forward_hook(hook))
            elif isinstance(m, nn.MultiheadAttention):
                patched.append((m, m.__dict__.get("forward")))
                m.forward = _explicit_mha(m, record)  # type: ignore[method-assign]
        if not (fused or patched):
            raise ValueError("attention rollout needs a vision transformer: the classifier has no self-attention "
                             "layer (timm Attention or nn.MultiheadAttention)")
        yield record
    finally:
        for h in handles:
            h.remove()
        for m, was in fused:
            vars(m)["fused_attn"] = was
        for m, own in patched:
            del m.forward
            if own is not None:
                m.forward = own


class _AttentionExplainer(ClassifierExplainer):
    """What both rollouts share: recording the attention, the token grid and the readout row."""

    def __init__(self, classifier: Classifier | nn.Module) -> None:
        super().__init__(classifier)
        if not attention_layers(self.classifier.model):
            raise ValueError(f"{type(self).__name__} needs a vision transformer: the classifier has no self-attention "
                             "layer (timm Attention or nn.MultiheadAttention)")

    def _forward(self, images: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Logits and the checked attention matrices ``[(B, heads, N, N)] * L`` of one forward pass."""
        with recorded_attention(self.classifier.model) as attns:
            logits = self.classifier(images)
        b = images.shape[0]
        n = attns[0].shape[-1] if attns else 0
        if not attns or any(a.dim() != 4 or a.shape[0] != b or a.shape[-2:] != (n, n) for a in attns):
            shapes = sorted({tuple(a.shape) for a in attns})
            raise ValueError(f"{type(self).__name__} reads global self-attention over one token sequence (a ViT); "
                             f"this model's attention maps have shapes {shapes} (windowed or pooling attention?)")
        return logits, attns

    def _readout(self, relevance: Tensor, images: Tensor) -> Tensor:
        """``(B, H, W)`` map from token-to-token relevance ``(B, N, N)``: the row of the token the
        head reads (class token; class and distillation tokens averaged for a distilled DeiT; all
        patch tokens averaged for a model that pools them), its patch columns on their grid,
        upsampled bilinearly."""
        size = (int(images.shape[-2]), int(images.shape[-1]))
        p, h, w = token_grid(relevance.shape[-1], size, self.classifier.layout)
        model = self.classifier.model
        pooled = str(getattr(model, "global_pool", "token")) in ("avg", "avgmax", "max")
        if p == 0 or pooled:
            row = relevance[:, p:, p:].mean(dim=1)
        else:
            readers = 2 if p >= 2 and getattr(model, "head_dist", None) is not None else 1
            row = relevance[:, :readers, p:].mean(dim=1)
        grid = row.reshape(-1, 1, h, w)
        return F.interpolate(grid, size=size, mode="bilinear", align_corners=False)[:, 0]


class AttentionRollout(_AttentionExplainer):
    """Attention rollout (Abnar & Zuidema, ACL 2020) for vision transformers.

    ``Â_l = (fuse_h A_l + I) / 2`` per layer (rows still sum to 1), ``R = Â_L ··· Â_1``; the map is
    the class token's row of ``R`` over the patch tokens, on the patch grid, upsampled bilinearly.
    Class-agnostic (``targets`` ignored); one forward pass, whose logits come back with the maps.

    Args:
        classifier: a ViT (timm ViT / DeiT, also with register tokens; torchvision ``vit_b_16``...).
        head_fusion: how heads are fused: ``"mean"`` (the paper), ``"max"`` or ``"min"``.

    Raises:
        ValueError: a model without self-attention, or an unknown ``head_fusion``.

    Example:
        >>> import timm, torch
        >>> vit = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2, num_classes=3)
        >>> AttentionRollout(vit).explain(torch.rand(2, 3, 32, 32)).shape
        torch.Size([2, 32, 32])
    """

    name = "rollout"
    class_specific = False

    def __init__(self, classifier: Classifier | nn.Module, head_fusion: str = "mean") -> None:
        if head_fusion not in HEAD_FUSIONS:
            raise ValueError(f"rollout head_fusion must be one of {HEAD_FUSIONS}, got {head_fusion!r}")
        super().__init__(classifier)
        self.head_fusion = head_fusion

    def _maps(self, images: Tensor, targets: Tensor | None) -> Explanation:
        logits, attns = self._forward(images)
        eye = torch.eye(attns[0].shape[-1], device=images.device, dtype=attns[0].dtype)
        rollout: Tensor | None = None
        for a in attns:
            fused = a.mean(1) if self.head_fusion == "mean" else (a.amax(1) if self.head_fusion == "max" else a.amin(1))
            step = fused + eye
            step = step / step.sum(dim=-1, keepdim=True)  # = 0.5 A + 0.5 I for rows of A summing to 1
            rollout = step if rollout is None else step @ rollout
        assert rollout is not None
        return Explanation(self._readout(rollout, images), logits)


class GradientRollout(_AttentionExplainer):
    """Gradient-weighted attention relevance (Chefer, Gur & Wolf, ICCV 2021) for vision transformers.

    Per layer ``Ā = E_h[(∇A ⊙ A)^+]`` with ``∇A`` the gradient of the target logit with respect to
    the layer's attention, ``R ← R + Ā R`` from ``R = I`` (first layer to last); the map is the
    class token's row of ``R`` over the patch tokens, upsampled bilinearly. One forward and one
    backward pass; the logits of the forward pass come back with the maps.

    Args:
        classifier: a ViT (see :class:`AttentionRollout`).
    """

    name = "grad_rollout"
    needs_grad = True

    def _maps(self, images: Tensor, targets: Tensor | None) -> Explanation:
        logits, attns = self._forward(images)
        t = logits.detach().argmax(dim=1) if targets is None else targets
        grads = torch.autograd.grad(logits.gather(1, t[:, None]).sum(), attns)
        n = attns[0].shape[-1]
        relevance = torch.eye(n, device=images.device, dtype=attns[0].dtype).expand(images.shape[0], n, n)
        for a, g in zip(attns, grads, strict=True):
            weighted = (g * a).clamp(min=0).mean(dim=1)
            relevance = relevance + weighted @ relevance
        return Explanation(self._readout(relevance.detach(), images), logits.detach())
