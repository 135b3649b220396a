import torch, torch.nn.functional as F, pytest
from torchvision.ops import sigmoid_focal_loss
from ssd_tutorial.anchors import *
from ssd_tutorial.model import *
from ssd_tutorial.loss import *
from ssd_tutorial.checkpoint import *
from ssd_tutorial.decode import *
from test_grid4x4 import targets

def ref_focal(logits, gt, alpha=.25, gamma=2.):
    C = logits.shape[-1] - 1
    return sigmoid_focal_loss(logits[..., 1:], F.one_hot(gt, C + 1)[..., 1:].to(logits.dtype), alpha, gamma, reduction='sum') / C

@pytest.mark.parametrize('alpha,gamma,scale', [(.25, 2., 1.), (.25, 2., 8.), (.5, 1., 3.), (-1, 2., 3.), (.25, 0., 3.)])
def test_focal_value_and_grad_match_torchvision(alpha, gamma, scale):
    g = torch.Generator().manual_seed(int(scale * 10 + gamma))
    x1 = (torch.randn(3, 189, 6, generator=g) * scale).double().requires_grad_()
    x2 = x1.detach().clone().requires_grad_()
    gt = torch.randint(0, 6, (3, 189), generator=g)
    mine, ref = FocalLoss(5, alpha, gamma)(x1, gt), ref_focal(x2, gt, alpha, gamma)
    mine.backward(); ref.backward()
    assert torch.allclose(mine, ref, rtol=1e-10)
    assert torch.allclose(x1.grad, x2.grad, rtol=1e-8, atol=1e-12)

def test_focal_background_column_gets_no_gradient():
    x = torch.randn(2, 16, 4, requires_grad=True)
    FocalLoss(3)(x, torch.randint(0, 4, (2, 16))).backward()
    assert torch.all(x.grad[..., 0] == 0) and x.grad[..., 1:].abs().sum() > 0

def test_focal_gamma0_no_alpha_is_bce():
    x, gt = torch.randn(4, 189, 6), torch.randint(0, 6, (4, 189))
    assert torch.allclose(FocalLoss(5, -1, 0.)(x, gt), bce_conf_loss(x, gt), rtol=1e-5)

def test_focal_wrong_columns():
    with pytest.raises(ValueError, match='expects 4 class columns, got 6'): FocalLoss(3)(torch.randn(2, 6), torch.zeros(2, dtype=torch.long))

def test_focal_in_ssd_loss_equals_reference():
    a, gs = multi_anchors(), multi_grid_sizes()
    bb, lb = targets(5, 4, 3)
    clas, bbox = torch.randn(5, 189, 6), torch.randn(5, 189, 4)
    loc, conf = SSDLoss(a, gs, conf_loss=FocalLoss(5)).parts((clas, bbox), bb, lb)
    loc_b, _ = SSDLoss(a, gs).parts((clas, bbox), bb, lb)
    gt = (bb + 1) / 2
    gt = torch.where(((gt[..., 2] - gt[..., 0]) > 0)[..., None], gt, 0.)
    gt_idx, pos = match_batch(gt, a, .4)
    assert torch.allclose(conf, ref_focal(clas, torch.where(pos, lb.gather(1, gt_idx), 0)), rtol=1e-5)
    assert torch.allclose(loc, loc_b)

@pytest.mark.cuda
def test_focal_cuda_matches_cpu():
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(32, 8732, 21, generator=g) * 4).requires_grad_()
    gt = torch.randint(0, 21, (32, 8732), generator=g)
    xc = x.detach().cuda().requires_grad_()
    l_cpu, l_gpu = FocalLoss(20)(x, gt), FocalLoss(20)(xc, gt.cuda())
    l_cpu.backward(); l_gpu.backward()
    assert torch.allclose(l_gpu.cpu(), l_cpu, rtol=1e-4)
    assert torch.allclose(xc.grad.cpu(), x.grad, rtol=1e-4, atol=1e-7)
    ref = ref_focal(xc.detach(), gt.cuda())
    assert torch.allclose(l_gpu.detach(), ref, rtol=1e-4)
