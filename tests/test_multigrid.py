import torch, pytest
from ssd_tutorial.boxes import *
from ssd_tutorial.anchors import *
from ssd_tutorial.model import *
from ssd_tutorial.loss import *
from ssd_tutorial.checkpoint import *
from ssd_tutorial.decode import *
from ssd_tutorial.train import load_checkpoint
from test_grid4x4 import loop_1, targets

def test_multi_anchors_layout():
    a, gs = multi_anchors(), multi_grid_sizes()
    assert a.shape == (189, 4) and gs.shape == (189, 1)
    zooms, ratios = (.7, 1., 1.3), ((1., 1.), (1., .5), (.5, 1.))
    i = 0
    for g in (4, 2, 1):                       # grid by grid, cells row by row, zoom outer, ratio inner
        for row in range(g):
            for col in range(g):
                for z in zooms:
                    for ra, rb in ratios:
                        exp = torch.tensor([(col + .5) / g, (row + .5) / g, z * ra / g, z * rb / g])
                        assert torch.allclose(a[i], exp), (i, a[i], exp)
                        assert gs[i, 0] == 1 / g
                        i += 1
    assert i == 189

def test_grid_anchors_is_a_special_case():
    assert torch.equal(multi_anchors((4,), (1.,), ((1., 1.),)), grid_anchors(4))
    assert torch.equal(multi_grid_sizes((4,), 1), torch.full((16, 1), .25))

def test_multi_model_shapes_bias_and_checkpoint(tmp_path):
    m = multi_model(5)
    clas, bbox = m(torch.randn(2, 3, 224, 224))
    assert clas.shape == (2, 189, 6) and bbox.shape == (2, 189, 4)
    for o in m.head.outs: assert torch.all(o.oconv1.bias == -4.)
    assert m.head.drop.p == .4 and m.head.sconv1.drop.p == .4
    m18 = multi_model(3, backbone='resnet18', size=128).eval()
    x = torch.randn(1, 3, 128, 128)
    ck = save_checkpoint(m18, tmp_path / 'mg', stage='multigrid', classes=['a', 'b', 'c'], size=128, backbone='resnet18')
    m2, cfg = load_checkpoint(ck)
    assert torch.allclose(m2(x)[0], m18(x)[0])

def test_multi_head_order_matches_anchors():
    "A hot cell of each grid's feature map changes exactly the 9 anchors of that cell (1x1 output convs)."
    head = MultiHead(5, nin=8, nf=8).eval()
    for o in head.outs: o.oconv1 = torch.nn.Conv2d(8, 6 * 9, 1)
    a = multi_anchors()
    def outs(maps): return torch.cat([o(x)[0] for o, x in zip(head.outs, maps)], 1)
    for gi, (g, off) in enumerate(((4, 0), (2, 144), (1, 180))):
        for row in range(g):
            for col in range(g):
                maps = [torch.zeros(1, 8, s, s) for s in (4, 2, 1)]
                base = outs(maps)
                maps[gi][0, :, row, col] = 1.
                hot = ((outs(maps) - base).abs().sum(-1)[0] > 1e-6).nonzero().flatten()
                cell = off + (row * g + col) * 9
                assert hot.tolist() == list(range(cell, cell + 9))
                assert torch.allclose(a[hot][:, :2], torch.tensor([(col + .5) / g, (row + .5) / g]).expand(9, 2))

@pytest.mark.parametrize('seed', [0, 1])
def test_ssd_loss_at_189_anchors_equals_loop(seed):
    a, gs = multi_anchors(), multi_grid_sizes()
    bb, lb = targets(6, 5, seed)
    g = torch.Generator().manual_seed(seed)
    c1 = torch.randn(6, 189, 6, generator=g, requires_grad=True); b1 = torch.randn(6, 189, 4, generator=g, requires_grad=True)
    c2, b2 = c1.detach().clone().requires_grad_(), b1.detach().clone().requires_grad_()
    ref = sum(loop_1(c, b, x, y, a, gs) for c, b, x, y in zip(c1, b1, bb, lb))
    got = SSDLoss(a, gs)((c2, b2), bb, lb)
    ref.backward(); got.backward()
    assert torch.allclose(got, ref, rtol=1e-5)
    assert torch.allclose(c1.grad, c2.grad, atol=1e-6) and torch.allclose(b1.grad, b2.grad, atol=1e-6)
