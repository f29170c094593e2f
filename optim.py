"""Optimisers: Adam (the default), and the released code's recipe, Adam wrapped in LARS.

LARS (You et al. 2017) scales each weight tensor's update by a trust ratio
    trust_coefficient * |w| / (|g + weight_decay * w|)
so that every layer moves by a similar fraction of its norm. Biases and BatchNorm
parameters are neither decayed nor adapted, as in SimCLR and the released CLAR code.
"""
import torch

OPTIMIZERS = ('adam', 'lars')


def build(model, name, learning_rate, weight_decay, trust_coefficient=0.001):
    """`adam`: Adam with weight decay on every parameter. `lars`: Adam whose gradients are
    first rescaled layer by layer by LARS (see lars_adapt_)."""
    # fused: one kernel for all parameters, and a step skipped without a host
    # synchronisation when the trainer sets optimizer.found_inf (as GradScaler does)
    if name == 'adam':
        return torch.optim.Adam(model.parameters(), lr=learning_rate, weight_decay=weight_decay,
                                fused=True)
    if name != 'lars':
        raise ValueError(f'optimizer must be adam or lars, got {name!r}')
    weights = [p for p in model.parameters() if p.ndim > 1]
    others = [p for p in model.parameters() if p.ndim <= 1]       # biases, BatchNorm
    return torch.optim.Adam([
        {'params': weights, 'lars': True, 'lars_weight_decay': weight_decay,
         'trust_coefficient': trust_coefficient},
        {'params': others, 'lars': False}], lr=learning_rate, weight_decay=0.0, fused=True)


@torch.no_grad()
def lars_adapt_(optimizer, eps=1e-8):
    """Add weight decay to the gradients of the LARS group and scale each by its trust
    ratio, in place; call after backward (and after unscaling) and before step()."""
    for group in optimizer.param_groups:
        if not group.get('lars'):
            continue
        for p in group['params']:
            if p.grad is None:
                continue
            p.grad.add_(p, alpha=group['lars_weight_decay'])
            weight_norm, grad_norm = p.norm(), p.grad.norm()
            ratio = torch.where((weight_norm > 0) & (grad_norm > 0),
                                group['trust_coefficient'] * weight_norm / (grad_norm + eps),
                                torch.ones_like(weight_norm))
            p.grad.mul_(ratio)
