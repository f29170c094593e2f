import math

import pytest
import torch
import torch.nn.functional as F

from model import ClarModel, ResNet18, masked_cross_entropy, nt_xent


def nt_xent_loop(z1, z2, temperature):
    """NT-Xent written out anchor by anchor, as in the SimCLR paper."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n = len(z1)
    total = 0.0
    for i in range(2 * n):
        positive = (i + n) % (2 * n)
        numerator = math.exp(float(z[i] @ z[positive]) / temperature)
        denominator = sum(math.exp(float(z[i] @ z[k]) / temperature)
                          for k in range(2 * n) if k != i)
        total += -math.log(numerator / denominator)
    return total / (2 * n)


@pytest.mark.parametrize('n,dim,temperature', [(2, 8, 0.5), (5, 16, 0.5), (8, 4, 0.1)])
def test_nt_xent_matches_a_loop_over_anchors(n, dim, temperature):
    torch.manual_seed(n)
    z1, z2 = torch.randn(n, dim), torch.randn(n, dim)
    assert nt_xent(z1, z2, temperature).item() == pytest.approx(nt_xent_loop(z1, z2, temperature), rel=1e-5)


def test_nt_xent_is_low_when_views_agree():
    z = torch.randn(16, 32)
    assert nt_xent(z, z + 0.01 * torch.randn_like(z), 0.5) < nt_xent(z, torch.randn(16, 32), 0.5)


def test_masked_cross_entropy_is_zero_without_labelled_clips():
    logits = torch.randn(4, 3, requires_grad=True)
    loss = masked_cross_entropy(logits, torch.tensor([0, 1, 2, -1]), torch.zeros(4, dtype=torch.bool))
    assert loss.item() == 0.0 and torch.isfinite(loss)
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_masked_cross_entropy_averages_the_labelled_rows_only():
    logits, labels = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    labelled = torch.tensor([True, False, True, False])
    expected = F.cross_entropy(logits[labelled], labels[labelled])
    assert masked_cross_entropy(logits, labels, labelled).item() == pytest.approx(expected.item())


def test_resnet18_has_the_standard_size_and_scales_with_width():
    standard = ResNet18(3, 1.0)
    assert standard.out_dim == 512
    assert sum(p.numel() for p in standard.parameters()) == pytest.approx(11.17e6, rel=0.01)
    narrow = ResNet18(3, 0.25)
    assert narrow.out_dim == 128
    assert narrow(torch.randn(2, 3, 128, 126)).shape == (2, 128)


@pytest.mark.parametrize('head', ['clar', 'selfsupervised', 'supervised'])
def test_model_heads(head):
    model = ClarModel(7, head, encoder_width=0.25)
    out = model(torch.randn(3, 16000))
    assert out['h'].shape == (3, 128) and out['logits'].shape == (3, 7)
    if head != 'supervised':
        assert out['z'].shape == (3, 128)
        assert torch.allclose(out['z'].norm(dim=1), torch.ones(3), atol=1e-5)


def test_online_probe_does_not_train_the_encoder():
    model = ClarModel(4, 'selfsupervised', encoder_width=0.25)
    model(torch.randn(2, 16000))['logits'].sum().backward()
    assert all(p.grad is None for p in model.encoder.parameters())
    assert model.classifier.weight.grad is not None


def test_lars_scales_each_weight_update_by_its_trust_ratio():
    import optim
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    optimizer = optim.build(model, 'lars', 1.0, weight_decay=0.1, trust_coefficient=0.01)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    weight = model[0].weight
    expected = (1 + 0.1 * weight.detach())
    expected = expected * 0.01 * weight.detach().norm() / expected.norm()
    optim.lars_adapt_(optimizer)
    assert torch.allclose(weight.grad, expected)
    for untouched in (model[0].bias, model[1].weight, model[1].bias):   # biases and BatchNorm
        assert torch.equal(untouched.grad, torch.ones_like(untouched))


def test_losses_stay_float32_under_bfloat16_autocast():
    """The training step runs the losses inside torch.autocast; there NT-Xent's similarity
    matrix must not drop to bfloat16 (at temperature 0.1 that moves the loss in its 4th
    significant digit). The embeddings are exactly representable in bfloat16, so any
    difference comes from the arithmetic, not from rounding the inputs."""
    generator = torch.Generator().manual_seed(0)
    z1, z2 = (torch.randn(64, 128, generator=generator).bfloat16().float() for _ in range(2))
    logits = torch.randn(64, 10, generator=generator).bfloat16().float()
    labels = torch.randint(0, 10, (64,), generator=generator)
    labelled = torch.rand(64, generator=generator) < 0.5
    expected = nt_xent(z1, z2, 0.1), masked_cross_entropy(logits, labels, labelled)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        got = nt_xent(z1, z2, 0.1), masked_cross_entropy(logits, labels, labelled)
    for value, reference in zip(got, expected):
        assert value.dtype == torch.float32
        assert value.item() == pytest.approx(reference.item(), rel=1e-6)
