import torch, torch.nn.functional as F, pytest
from ssd_tutorial.boxes import *
from ssd_tutorial.anchors import *
from ssd_tutorial.model import *
from ssd_tutorial.loss import *
from ssd_tutorial.checkpoint import *
from ssd_tutorial.decode import *
from ssd_tutorial.train import load_checkpoint
from ssd_tutorial.metrics import stage_table

def loop_1(b_c, b_bb, bbox, clas, anchors, grid_size, thresh=.4, parts=False):
    "Reference: the per-image loss of the walkthrough, written plainly (one-hot BCE, per-object loop for ties)."
    keep = (bbox[:, 2] - bbox[:, 0]) > 0
    bbox, clas = (bbox[keep] + 1) / 2, clas[keep]
    C = b_c.shape[1] - 1
    gt_clas = torch.zeros(len(anchors), dtype=torch.long); loc = b_bb.sum() * 0
    if len(bbox):
        ov = box_iou(bbox, cthw2tlbr(anchors))
        prior_idx = ov.argmax(1)
        gt_overlap, gt_idx = ov.max(0)
        for i, o in enumerate(prior_idx.tolist()): gt_idx[o] = i; gt_overlap[o] = 1.99
        pos = gt_overlap > thresh
        gt_clas[pos] = clas[gt_idx[pos]]
        loc = (actn_to_bb(b_bb, anchors, grid_size)[pos] - bbox[gt_idx][pos]).abs().mean()
    conf = F.binary_cross_entropy_with_logits(b_c[:, 1:], F.one_hot(gt_clas, C + 1)[:, 1:].float(), reduction='sum') / C
    return (loc, conf, int((gt_clas > 0).sum())) if parts else loc + conf

def targets(bs, M, seed):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(bs, M, 2, generator=g) * .8; wh = torch.rand(bs, M, 2, generator=g) * .4 + .01
    bb = torch.cat([xy, (xy + wh).clamp(max=1)], -1) * 2 - 1
    lb = torch.randint(1, 6, (bs, M), generator=g)
    n = torch.randint(0, M + 1, (bs,), generator=g); n[0] = 0; n[-1] = M
    pad = torch.arange(M)[None] >= n[:, None]
    bb[pad], lb[pad] = 0., 0
    bb[1, :2] = torch.tensor([[-.9, -.9, -.7, -.7], [-.95, -.95, -.75, -.75]]); lb[1, :2] = torch.tensor([2, 4])  # shared best anchor
    return bb, lb

def test_grid_anchors_order():
    a = grid_anchors(4)
    assert a.shape == (16, 4)
    for i in range(16): assert torch.allclose(a[i], torch.tensor([(i % 4 + .5) / 4, (i // 4 + .5) / 4, .25, .25]))
    assert torch.allclose(grid_anchors(2), torch.tensor([[.25, .25, .5, .5], [.75, .25, .5, .5], [.25, .75, .5, .5], [.75, .75, .5, .5]]))

def test_anchor_order_matches_head_flattening():
    probe = OutConv(1, 8, 5, -3.)
    probe.oconv1, probe.oconv2 = torch.nn.Conv2d(8, 6, 1), torch.nn.Conv2d(8, 4, 1)
    for r, c in [(0, 0), (1, 2), (3, 0), (2, 3)]:
        x = torch.zeros(1, 8, 4, 4); x[0, :, r, c] = 1.
        d = (probe(x)[0] - probe(torch.zeros(1, 8, 4, 4))[0]).abs().sum(-1)[0]
        i = d.argmax().item()
        assert (d > 1e-6).sum() == 1 and i == r * 4 + c
        cx, cy = grid_anchors(4)[i, :2].tolist()  # the hot anchor's centre lies in the hot cell
        assert int(cx * 4) == c and int(cy * 4) == r

def test_map_to_ground_truth_rules():
    ov = torch.tensor([[.6, .5, .1, .0, .45], [.0, .7, .2, .0, .3], [.0, .0, .0, .1, .0]])
    gt_overlap, gt_idx, pos = map_to_ground_truth(ov)
    assert gt_idx.tolist() == [0, 1, 1, 2, 0]
    assert pos.tolist() == [True, True, False, True, True]
    assert torch.allclose(gt_overlap, torch.tensor([1.99, 1.99, .2, 1.99, .45]))
    # two objects with the same best anchor: the later wins
    gt_overlap, gt_idx, pos = map_to_ground_truth(torch.tensor([[.9, .1], [.8, .2]]))
    assert gt_idx[0] == 1 and gt_overlap[0] == 1.99
    _, _, pos = map_to_ground_truth(torch.tensor([[.05, .41, .39]]), thresh=.4)
    assert pos.tolist() == [False, True, False]

def test_actn_to_bb():
    a = grid_anchors(4)
    assert torch.allclose(actn_to_bb(torch.zeros(16, 4), a, .25), cthw2tlbr(a))
    b = tlbr2cthw(actn_to_bb(torch.full((16, 4), 30.), a, .25))
    assert torch.allclose(b[:, :2], a[:, :2] + .125) and torch.allclose(b[:, 2:], a[:, 2:] * 1.5)
    b = tlbr2cthw(actn_to_bb(torch.full((3, 16, 4), -30.), a, torch.full((16, 1), .25)))
    assert torch.allclose(b[..., :2], a[:, :2] - .125, atol=1e-6) and torch.allclose(b[..., 2:], a[:, 2:] * .5)

def test_grid_model_shapes_and_init():
    m = grid_model(5, backbone='resnet18', size=224).eval()
    clas, bbox = m(torch.randn(2, 3, 224, 224))
    assert clas.shape == (2, 16, 6) and bbox.shape == (2, 16, 4)
    assert (m.head.out.oconv1.bias == -3).all()
    assert grid_model(3, backbone='resnet18', size=128)(torch.randn(1, 3, 128, 128))[0].shape == (1, 16, 4)
    with pytest.raises(ValueError, match='image size 160'): grid_model(5, size=160)
    with pytest.raises(ValueError, match="backbone must be"): grid_model(5, backbone='vgg')

def test_resnet34_walkthrough_shape():
    clas, bbox = grid_model(20)(torch.randn(1, 3, 224, 224))
    assert clas.shape == (1, 16, 21) and bbox.shape == (1, 16, 4)

def test_bce_conf_loss_matches_one_hot():
    x, t = torch.randn(3, 16, 6, requires_grad=True), torch.randint(0, 6, (3, 16))
    ref = F.binary_cross_entropy_with_logits(x[..., 1:], F.one_hot(t, 6)[..., 1:].float(), reduction='sum') / 5
    ours = bce_conf_loss(x, t)
    assert torch.allclose(ours, ref)
    g1, = torch.autograd.grad(ours, x); g2, = torch.autograd.grad(ref, x)
    assert torch.allclose(g1, g2, atol=1e-6)

@pytest.mark.parametrize('seed,n_anchors', [(0, 16), (1, 16), (2, 16), (3, 189)])
def test_batched_loss_equals_loop(seed, n_anchors):
    if n_anchors == 16: anc, gs = grid_anchors(4), .25
    else:
        g = torch.Generator().manual_seed(seed)
        anc = torch.cat([torch.rand(n_anchors, 2, generator=g), torch.rand(n_anchors, 2, generator=g) * .5 + .05], 1); gs = anc[:, 2:3]
    bb, lb = targets(6, 5, seed)
    g = torch.Generator().manual_seed(seed + 10)
    c1 = torch.randn(6, n_anchors, 6, generator=g, requires_grad=True); b1 = torch.randn(6, n_anchors, 4, generator=g, requires_grad=True)
    ref = sum(loop_1(c, b, x, y, anc, gs) for c, b, x, y in zip(c1, b1, bb, lb))
    ours = SSDLoss(anc, gs)((c1, b1), bb, lb)
    assert torch.allclose(ours, ref, rtol=1e-5)
    gr = torch.autograd.grad(ref, (c1, b1)); go = torch.autograd.grad(ours, (c1, b1))
    for a, b in zip(gr, go): assert torch.allclose(a, b, atol=1e-5)

@pytest.mark.parametrize('seed', [0, 1])
def test_per_positive_divides_the_class_loss_by_the_batch_positives(seed):
    g = torch.Generator().manual_seed(seed)
    anc = torch.cat([torch.rand(300, 2, generator=g), torch.rand(300, 2, generator=g) * .5 + .05], 1); gs = anc[:, 2:3]
    bb, lb = targets(6, 5, seed)
    c1 = torch.randn(6, 300, 6, generator=g, requires_grad=True); b1 = torch.randn(6, 300, 4, generator=g, requires_grad=True)
    per = [loop_1(c, b, x, y, anc, gs, parts=True) for c, b, x, y in zip(c1, b1, bb, lb)]
    n_pos = sum(p[2] for p in per)
    assert n_pos > 6
    ref = sum(p[0] for p in per) + sum(p[1] for p in per) * 6 / n_pos
    ours = SSDLoss(anc, gs, per_positive=True)((c1, b1), bb, lb)
    assert torch.allclose(ours, ref, rtol=1e-5)
    for a, b in zip(torch.autograd.grad(ref, (c1, b1)), torch.autograd.grad(ours, (c1, b1))): assert torch.allclose(a, b, atol=1e-6)
    # a batch without objects: no division by zero, the class loss is the plain sum times the batch size
    empty = torch.zeros(6, 2, 4), torch.zeros(6, 2, dtype=torch.long)
    loc, conf = SSDLoss(anc, gs, per_positive=True).parts((c1, b1), *empty)
    assert loc == 0 and torch.allclose(conf, SSDLoss(anc, gs).parts((c1, b1), *empty)[1] * 6)

def test_empty_batch_gives_class_loss_only():
    anc = grid_anchors(4)
    c = torch.randn(2, 16, 6, requires_grad=True); b = torch.randn(2, 16, 4, requires_grad=True)
    bb, lb = torch.zeros(2, 3, 4), torch.zeros(2, 3, dtype=torch.long)
    lf = SSDLoss(anc, .25)
    loc, conf = lf.parts((c, b), bb, lb)
    assert loc == 0 and torch.isfinite(conf)
    assert torch.allclose(conf, F.binary_cross_entropy_with_logits(c[..., 1:], torch.zeros(2, 16, 5), reduction='sum') / 5)
    (loc + conf).backward()
    assert torch.isfinite(b.grad).all() and (b.grad == 0).all()

def test_checkpoint_round_trip(tmp_path):
    m = grid_model(5, backbone='resnet18', size=128).eval()
    ck = save_checkpoint(m, tmp_path / 'm', stage='grid4x4', classes=list('abcde'), size=128, backbone='resnet18')
    m2, cfg = load_checkpoint(ck)
    x = torch.randn(2, 3, 128, 128)
    assert torch.allclose(m(x)[0], m2(x)[0]) and cfg['classes'] == list('abcde')
    with pytest.raises(FileNotFoundError, match='checkpoint not found'): load_checkpoint(tmp_path / 'none')

@pytest.mark.cuda
def test_cuda_model_loss_and_step_match_cpu():
    torch.manual_seed(0)
    m = grid_model(5, backbone='resnet18', size=128).eval()
    x = torch.randn(4, 3, 128, 128); bb, lb = targets(4, 5, 0)
    lf = SSDLoss(grid_anchors(4), .25)
    with torch.no_grad(): pc = m(x); lc = lf(pc, bb, lb)
    mg = m.cuda()
    with torch.no_grad(): pg = mg(x.cuda()); lg = SSDLoss(grid_anchors(4), .25)(pg, bb.cuda(), lb.cuda())
    assert torch.allclose(pc[0], pg[0].cpu(), atol=1e-3) and torch.allclose(lc, lg.cpu(), rtol=1e-3)
    with torch.autocast('cuda', dtype=torch.bfloat16):
        pa = mg(x.cuda()); la = SSDLoss(grid_anchors(4), .25)(pa, bb.cuda(), lb.cuda())
    assert torch.allclose(la.float().cpu(), lc, rtol=5e-2)
    mg.train(); opt = torch.optim.SGD(mg.parameters(), lr=1e-3)
    l = SSDLoss(grid_anchors(4), .25)(mg(x.cuda()), bb.cuda(), lb.cuda()); l.backward(); opt.step()
    assert torch.isfinite(l)

def test_cpu_chunked_class_loss_equals_loop():
    "8732 anchors x 21 classes: the CPU path sums the class loss over groups of 5 images; same value and gradients."
    g = torch.Generator().manual_seed(5)
    anc = torch.cat([torch.rand(8732, 2, generator=g), torch.rand(8732, 2, generator=g) * .5 + .05], 1)
    bb, lb = targets(12, 4, 5)
    lb = lb * 4  # labels up to 20
    c = torch.randn(12, 8732, 21, generator=g, requires_grad=True); b = torch.randn(12, 8732, 4, generator=g, requires_grad=True)
    ref = sum(loop_1(ci, bi, x, y, anc, anc[:, 2:3]) for ci, bi, x, y in zip(c, b, bb, lb))
    ours = SSDLoss(anc, anc[:, 2:3])((c, b), bb, lb)
    assert torch.allclose(ours, ref, rtol=1e-5)
    for a, o in zip(torch.autograd.grad(ref, (c, b)), torch.autograd.grad(ours, (c, b))): assert torch.allclose(a, o, atol=1e-5)

def test_stage_table_keeps_rows_across_notebooks(tmp_path):
    res = lambda m, ap: dict(voc07=dict(mAP=m), coco=dict(AP=ap))
    p = tmp_path / 'models' / 'stages.json'
    stage_table('grid', res(.3, .07), 6144, 2, 180., path=p)
    t = stage_table('multi', res(.25, .06), 6144, 2, 175.4, path=p).splitlines()
    assert len(t) == 3 and t[1].split()[:5] == ['grid', '6144', '2', '0.300', '0.070'] and t[2].endswith('175s')
    t = stage_table('grid', res(.5, .1), 1, 1, 1., path=p).splitlines()                  # a re-run replaces its row
    assert len(t) == 2 and t[1].split()[3] == '0.500'                                      # and shows no later stage
    assert len(stage_table('multi', res(.2, .05), 1, 1, 1., path=p).splitlines()) == 3
    assert len(stage_table('x', res(0, 0), 1, 1, 1., path=tmp_path / 'no.json', keep=False).splitlines()) == 2 and not (tmp_path / 'no.json').exists()
