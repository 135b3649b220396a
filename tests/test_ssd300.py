"SSD300 (nbs/07_ssd300.ipynb, nbs/07_ssd300_loss.ipynb) against torchvision: default boxes, box coding, models, the MultiBox loss, decoding."
import copy, math, pytest, torch, torch.nn as nn, torch.nn.functional as F, torchvision
from torchvision.models.detection import ssd300_vgg16
from torchvision.models.detection.ssd import SSD
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection._utils import BoxCoder
from ssd_tutorial.boxes import *
from ssd_tutorial.anchors import *
from ssd_tutorial.model import *
from ssd_tutorial.loss import *
from ssd_tutorial.checkpoint import *
from ssd_tutorial.decode import *
from ssd_tutorial.train import load_checkpoint, MODEL_FACTORIES
from ssd_tutorial.loss import FocalLoss
from ssd_tutorial.decode import nms

TV_SCALES, STEPS, FMAPS = [.07, .15, .33, .51, .69, .87, 1.05], (8, 16, 32, 64, 100, 300), (38, 19, 10, 5, 3, 1)

def tv_default_boxes(fmaps=FMAPS, scales=TV_SCALES, steps=STEPS, size=300, clip=True, ratios=SSD300_RATIOS):
    "torchvision's default boxes for one `size` px image: pixel corners."
    gen = DefaultBoxGenerator([list(r) for r in ratios], scales=scales, steps=list(steps) if steps else None, clip=clip)
    return gen(ImageList(torch.zeros(1, 3, size, size), [(size, size)]), [torch.zeros(1, 1, f, f) for f in fmaps])[0]

ANCHORS = ssd_anchors(scales=TV_SCALES, steps=STEPS)   # torchvision's SSD300 default boxes, relative cthw
A = len(ANCHORS)

# ---------------------------------------------------------------- default boxes

def anchors_loop(fmaps, scales, ratios, steps=None, size=300, clip=True):
    "Reference: the default boxes one at a time."
    out = []
    for k, f in enumerate(fmaps):
        s, s2 = scales[k], math.sqrt(scales[k] * scales[k + 1])
        shapes = [(s, s), (s2, s2)] + [p for r in ratios[k] for p in ((s * math.sqrt(r), s / math.sqrt(r)), (s / math.sqrt(r), s * math.sqrt(r)))]
        step = steps[k] / size if steps else 1 / f
        for i in range(f):
            for j in range(f):
                for w, h in shapes: out.append([(j + .5) * step, (i + .5) * step, min(w, 1) if clip else w, min(h, 1) if clip else h])
    return torch.tensor(out)

def test_scales_are_the_papers():
    assert ssd_scales() == pytest.approx([.1, .2, .375, .55, .725, .9, 1.075])
    assert ssd_scales(7, .15, .9, .07) == pytest.approx([.07, .15, .3, .45, .6, .75, .9, 1.05])

def test_ssd300_anchor_count_and_order():
    a = ssd_anchors()
    assert a.shape == (8732, 4) and ssd_grid_sizes().shape == (8732, 1)
    assert torch.allclose(a[:4], torch.tensor([[.5 / 38, .5 / 38, .1, .1], [.5 / 38, .5 / 38, math.sqrt(.02), math.sqrt(.02)],
                                               [.5 / 38, .5 / 38, .1 * math.sqrt(2), .1 / math.sqrt(2)], [.5 / 38, .5 / 38, .1 / math.sqrt(2), .1 * math.sqrt(2)]]))
    assert torch.allclose(a[4, :2], torch.tensor([1.5 / 38, .5 / 38]))          # next cell: one column to the right
    assert torch.allclose(a[38 * 4, :2], torch.tensor([.5 / 38, 1.5 / 38]))     # next row
    assert torch.allclose(a[-1], torch.tensor([.5, .5, 1 / math.sqrt(2) * .9, 1.]))  # the tall box of the 1x1 map, clipped

@pytest.mark.parametrize('kw', [dict(), dict(scales=TV_SCALES, steps=STEPS), dict(clip=False),
                                dict(fmaps=(64, 32, 16, 8, 6, 4), size=512), dict(fmaps=(10, 5), ratios=((2,), (2, 3)), scales=[.2, .5, .9])])
def test_anchors_equal_loop(kw):
    kw = dict(dict(fmaps=FMAPS, ratios=SSD300_RATIOS), **kw)
    scales = kw.get('scales') or ssd_scales(len(kw['fmaps']))
    ref = anchors_loop(kw['fmaps'], scales, kw['ratios'], kw.get('steps'), kw.get('size', 300), kw.get('clip', True))
    assert torch.allclose(ssd_anchors(**kw), ref, atol=1e-6)

@pytest.mark.parametrize('kw', [dict(), dict(clip=False), dict(steps=None), dict(scales=ssd_scales(), steps=None),
                                dict(fmaps=(64, 32, 16, 8, 6, 4), steps=None, size=512)])
def test_anchors_equal_torchvision(kw):
    kw = dict(dict(fmaps=FMAPS, scales=TV_SCALES, steps=STEPS, clip=True), **kw)
    size = kw.pop('size', 300)
    tv = tv_default_boxes(kw['fmaps'], kw['scales'], kw['steps'], size, kw['clip'])
    ours = ssd_anchors(kw['fmaps'], kw['scales'], SSD300_RATIOS, kw['steps'], size, kw['clip'])
    assert (tlbr2cthw(tv / size) - ours).abs().max() <= 1e-6

def test_anchor_order_matches_head():
    "A hot cell of any map changes exactly its `k` outputs, and `ssd_anchors` puts those boxes' centres in that cell."
    ks = [2 + 2 * len(r) for r in SSD300_RATIOS]
    head = SSDHead(3, [4] * 6, ks)
    head.clas = nn.ModuleList([nn.Conv2d(4, k * 4, 1) for k in ks])
    start = 0
    for m, (f, k) in enumerate(zip(FMAPS, ks)):
        i, j = (f * 2) // 3, f // 4
        xs = [torch.zeros(1, 4, g, g) for g in FMAPS]
        base = head(xs)[0]; xs[m][0, :, i, j] = 1.
        hot = ((head(xs)[0] - base).abs().sum(-1)[0] > 1e-6).nonzero().flatten()
        first = start + (i * f + j) * k
        assert hot.tolist() == list(range(first, first + k))
        assert torch.allclose(ssd_anchors()[hot, :2], torch.tensor([(j + .5) / f, (i + .5) / f]).expand(k, 2))
        start += f * f * k

def test_stage1_loss_runs_on_ssd300_anchors():
    a, gs = ssd_anchors(), ssd_grid_sizes()
    assert torch.allclose(gs[[0, 5775, 5776, 8731], 0], torch.tensor([1 / 38, 1 / 38, 1 / 19, 1.]))
    assert torch.allclose(ssd_grid_sizes(steps=STEPS)[[0, 8000], 0], torch.tensor([8 / 300, 32 / 300]))
    bb, lb = torch.tensor([[[-.6, -.6, .2, .1], [0., .2, .9, .9]], [[0., 0, 0, 0], [0, 0, 0, 0]]]), torch.tensor([[1, 3], [0, 0]])
    for conf_loss in (bce_conf_loss, FocalLoss(5)):
        c, b = torch.randn(2, 8732, 6, requires_grad=True), torch.randn(2, 8732, 4, requires_grad=True)
        l = SSDLoss(a, gs, conf_loss=conf_loss)((c, b), bb, lb)
        l.backward()
        assert torch.isfinite(l) and torch.isfinite(c.grad).all() and torch.isfinite(b.grad).all()

# ---------------------------------------------------------------- encoding

def test_encode_decode_equal_boxcoder():
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, A, (2000,), generator=g)
    xy = torch.rand(2000, 2, generator=g) * .8
    gt = torch.cat([xy, xy + torch.rand(2000, 2, generator=g) * .5 + .005], 1)
    coder, a_px = BoxCoder(weights=(10., 10., 5., 5.)), cthw2tlbr(ANCHORS[idx]) * 300
    d = encode_boxes(gt, ANCHORS[idx])
    assert torch.allclose(coder.encode_single(gt * 300, a_px), d, atol=1e-4)
    assert torch.allclose(decode_boxes(d, ANCHORS[idx]), gt, atol=1e-5)
    for deltas in (d, torch.randn(2000, 4, generator=g) * 3, torch.randn(2000, 4, generator=g) * 50):   # the last: clamped sizes
        ref = coder.decode_single(deltas, a_px) / 300
        assert torch.allclose(decode_boxes(deltas, ANCHORS[idx]), ref, atol=1e-5, rtol=1e-5)
    assert torch.allclose(encode_boxes(gt[None, :5], ANCHORS[None, idx[:5]]), d[None, :5])         # any leading shape
    assert encode_boxes(gt[:3], ANCHORS[:3], variances=(1., 1.))[:, 2:].allclose(torch.log(tlbr2cthw(gt[:3])[:, 2:] / ANCHORS[:3, 2:]))

# ---------------------------------------------------------------- models

@pytest.fixture(scope='module')
def vgg_pair():
    "Our VGG16 SSD300 with the random weights of torchvision's `ssd300_vgg16` (91 classes with background)."
    torch.manual_seed(0)
    tv = ssd300_vgg16(weights=None, weights_backbone=None, num_classes=91).eval()
    return load_torchvision_ssd(ssd_model(90).eval(), tv), tv

def test_vgg_parameter_count_equals_torchvision(vgg_pair):
    ours, tv = vgg_pair
    n = sum(p.numel() for p in ours.parameters())
    assert n == sum(p.numel() for p in tv.parameters()) == 35641826

def test_vgg_outputs_equal_torchvision(vgg_pair):
    ours, tv = vgg_pair
    x = torch.randn(1, 3, 300, 300, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        maps = ours.body(x)
        clas, bbox = ours.head(maps)
        ref = tv.head(list(tv.backbone(x).values()))
    assert [m.shape[-1] for m in maps] == ours.fmap_sizes(300) == list(FMAPS)
    assert [m.shape[1] for m in maps] == list(VGGAtrous.nfs)
    assert clas.shape == (1, 8732, 91) and bbox.shape == (1, 8732, 4)
    assert (clas - ref['cls_logits']).abs().max() <= 1e-4 and (bbox - ref['bbox_regression']).abs().max() <= 1e-4

def test_vgg_l2norm_and_layout(vgg_pair):
    ours, _ = vgg_pair
    b = ours.body
    assert torch.equal(b.l2norm.weight.detach(), torch.full((512,), 20.))
    assert b.conv4_3[16].ceil_mode and isinstance(b.conv7[7], nn.MaxPool2d) and b.conv7[7].stride == 1
    assert b.conv7[8].dilation == (6, 6) and b.conv7[8].out_channels == 1024 and b.conv7[10].kernel_size == (1, 1)
    assert ours.head.ks == [4, 6, 6, 6, 4, 4] and all(c.kernel_size == (3, 3) for c in [*ours.head.clas, *ours.head.bbox])
    x = torch.randn(2, 512, 3, 3) * 30
    assert torch.allclose(L2Norm(512, 7.)(x).norm(dim=1), torch.full((2, 3, 3), 7.), atol=1e-4)

def test_vgg_fmap_sizes_at_the_smallest_size(vgg_pair):
    ours, _ = vgg_pair
    with torch.no_grad(): maps = ours.body(torch.randn(1, 3, 268, 268))
    assert [m.shape[-1] for m in maps] == ours.fmap_sizes(268) == [34, 17, 9, 5, 3, 1]
    with pytest.raises(ValueError, match='too small'): ours.fmap_sizes(267)

def test_load_torchvision_ssd_refuses_what_does_not_fit(vgg_pair):
    ours, tv = vgg_pair
    other = SSD300(ours.body, SSDHead(20, VGGAtrous.nfs, [4, 6, 6, 6, 4, 4]))
    with pytest.raises(ValueError, match='the class head does not fit'): load_torchvision_ssd(other, tv)
    with pytest.raises(ValueError, match='needs a VGG16 model'): load_torchvision_ssd(ssd_model(90, 'resnet18'), tv)

@pytest.fixture(scope='module')
def rn18(): return ssd_model(20, 'resnet18').eval()

@pytest.mark.parametrize('arch', ['resnet34', 'resnet18'])
def test_resnet_models(arch, rn18):
    m = rn18 if arch == 'resnet18' else ssd_model(20, arch).eval()
    with torch.no_grad():
        maps = m.body(torch.randn(1, 3, 300, 300)); clas, bbox = m.head(maps)
    assert [f.shape[-1] for f in maps] == m.fmap_sizes(300) == list(FMAPS)
    assert [f.shape[1] for f in maps] == list(m.body.nfs) == [256, 512, 512, 256, 256, 256]
    assert clas.shape == (1, 8732, 21) and bbox.shape == (1, 8732, 4)
    l3 = m.body.body[6][0]
    assert l3.conv1.stride == (1, 1) and l3.downsample[0].stride == (1, 1)
    assert sum(isinstance(l, nn.BatchNorm2d) for l in m.body.extras.modules()) == 10

@pytest.mark.parametrize('size', [257, 320, 512])
def test_resnet_fmap_sizes_follow_the_network(size, rn18):
    m = rn18
    with torch.no_grad(): clas = m(torch.randn(1, 3, size, size))[0]
    fs = m.fmap_sizes(size)
    assert clas.shape[1] == len(ssd_anchors(fmaps=fs)) == sum(f * f * k for f, k in zip(fs, m.head.ks))

@pytest.mark.parametrize('size,fmaps', [(128, [16, 8, 4, 2, 1]), (256, [32, 16, 8, 4, 2, 1]), (64, [8, 4, 2, 1])])
def test_resnet_small_inputs_get_a_shorter_layout(size, fmaps):
    "Below 257 px a ResNet body halves its map down to 1x1; the head, the ratios and the default boxes follow."
    m = ssd_model(5, 'resnet18', size=size).eval()
    with torch.no_grad():
        maps = m.body(torch.randn(2, 3, size, size)); clas, bbox = m.head(maps)
    assert [f.shape[-1] for f in maps] == m.fmap_sizes(size) == fmaps
    assert [f.shape[1] for f in maps] == list(m.body.nfs)
    assert m.ratios == SSD300_RATIOS[:len(fmaps)] and len(m.head.ks) == len(fmaps)
    assert clas.shape[1] == bbox.shape[1] == len(ssd_anchors(fmaps=fmaps, ratios=m.ratios)) == sum(f * f * k for f, k in zip(fmaps, m.head.ks))
    if size == 128: assert clas.shape[1] == 1532

def test_small_ssd_checkpoint_round_trip(tmp_path):
    "`load_checkpoint` rebuilds the layout of the size the model was saved at, and `stage_priors` gives its boxes."
    from ssd_tutorial.train import stage_priors
    m = ssd_model(5, 'resnet18', size=128).eval()
    ck = save_checkpoint(m, tmp_path / 'small', stage='ssd', classes=list('abcde'), size=128, backbone='resnet18')
    m2, cfg = load_checkpoint(ck)
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad(): assert torch.equal(m(x)[0], m2(x)[0])
    anchors, gs = stage_priors('ssd', m2, 128)
    assert len(anchors) == len(gs) == 1532

def test_bad_sizes_and_backbones():
    with pytest.raises(ValueError, match='too small'): ssd_model(3, 'vgg16', size=256)
    with pytest.raises(ValueError, match='backbone must be'): ssd_model(3, 'resnet50')

def test_pretrained_falls_back_with_a_warning(monkeypatch):
    "Offline, `pretrained=True` warns and builds random weights; nothing is downloaded."
    for arch in ('vgg16', 'resnet18'):
        real = getattr(torchvision.models, arch)
        def fake(weights=None, _real=real, **kw):
            if weights is not None: raise RuntimeError('no internet here')
            return _real(weights=None, **kw)
        monkeypatch.setattr(torchvision.models, arch, fake)
    for arch in ('resnet18', 'vgg16'):
        with pytest.warns(UserWarning, match=f'could not load ImageNet weights for {arch}'):
            m = ssd_model(3, arch, pretrained=True)
        assert isinstance(m, SSD300)

def test_vgg16_bn_is_vgg16_with_batch_norm_everywhere(tmp_path):
    "The from-scratch body: torchvision's vgg16_bn convs, batch norm in fc6, fc7 and the extras; the same maps and 8732 boxes; it trains and round-trips."
    torch.manual_seed(0)
    m, plain = ssd_model(5, 'vgg16_bn'), ssd_model(5, 'vgg16')
    convs = lambda mod: [l for l in mod.modules() if isinstance(l, nn.Conv2d)]
    bns = [l for l in m.modules() if isinstance(l, nn.BatchNorm2d)]
    assert len(bns) == len(convs(m.body)) == len(convs(plain.body)) == 23 and not any(isinstance(l, nn.BatchNorm2d) for l in plain.modules())
    assert [c.weight.shape for c in convs(m)] == [c.weight.shape for c in convs(plain)]     # the same network otherwise
    tv = torchvision.models.vgg16_bn(weights=None).features
    assert [c.weight.shape for c in convs(m.body.conv4_3) + convs(m.body.conv7)[:3]] == [c.weight.shape for c in convs(tv)]
    assert m.fmap_sizes(300) == plain.fmap_sizes(300) == list(FMAPS)
    bb, lb = torch.tensor([[[-.8, -.8, .2, .3]], [[-.2, -.5, .9, .9]]]), torch.tensor([[1], [3]])
    opt = torch.optim.SGD(m.parameters(), lr=1e-2)
    loss = MultiBoxLoss(ssd_anchors())(m.train()(torch.randn(2, 3, 300, 300)), bb, lb)
    loss.backward(); before = m.body.extras[0][1].running_mean.clone(); opt.step()
    assert torch.isfinite(loss) and all(p.grad is not None for p in m.parameters())
    assert not torch.equal(before, torch.zeros_like(before))                                # batch norm saw the batch
    ck = save_checkpoint(m, tmp_path / 'v', stage='ssd', classes=[f'c{i}' for i in range(5)], size=300, backbone='vgg16_bn')
    m2, cfg = load_checkpoint(ck)
    x = torch.randn(1, 3, 300, 300)
    with torch.no_grad(): assert torch.allclose(m2(x)[0], m.eval()(x)[0], atol=1e-5)

def test_checkpoint_roundtrip(tmp_path, rn18):
    assert MODEL_FACTORIES['ssd'].__name__ == 'ssd_model'  # (running nbs/07 in this process registers its own copy)
    m = rn18
    ck = save_checkpoint(m, tmp_path / 'ssd', stage='ssd', classes=[f'c{i}' for i in range(20)], size=300, backbone='resnet18')
    m2, cfg = load_checkpoint(ck)
    x = torch.randn(1, 3, 300, 300)
    with torch.no_grad(): assert torch.allclose(m2(x)[0], m(x)[0]) and torch.allclose(m2(x)[1], m(x)[1])

def test_all_exports_ssd300():
    import ssd_tutorial.all as everything, ssd_tutorial.model as mod
    assert set(mod.__all__) <= set(everything.__all__)
    assert all(hasattr(everything, n) for n in ('ssd_anchors', 'MultiBoxLoss', 'decode_ssd', 'ssd_model', 'load_torchvision_ssd'))

# ---------------------------------------------------------------- the MultiBox loss

class _Stub(nn.Module):
    out_channels = [8] * 6
    def forward(self, x): return x

def tv_ssd(C=20, **kw):
    "A torchvision `SSD` with SSD300's default boxes and a stand-in backbone: for `compute_loss` and `postprocess_detections`."
    gen = DefaultBoxGenerator([list(r) for r in SSD300_RATIOS], scales=TV_SCALES, steps=list(STEPS))
    return SSD(_Stub(), gen, (300, 300), num_classes=C + 1, **kw)

A_PX = tv_default_boxes()

def tv_loss(tvm, clas, bbox, bboxes, labels):
    "torchvision's `compute_loss` with its own matcher (on the IoU in relative units, so that exact ties break alike)."
    targets, matched = [], []
    for bb, lb in zip(bboxes, labels):
        keep = (bb[:, 2] - bb[:, 0]) > 0
        gt = (bb[keep] + 1) / 2
        targets.append(dict(boxes=gt * 300, labels=lb[keep]))
        matched.append(tvm.proposal_matcher(box_iou(gt, cthw2tlbr(ANCHORS))) if keep.any() else torch.full((A,), -1, dtype=torch.long))
    l = tvm.compute_loss(targets, dict(cls_logits=clas, bbox_regression=bbox), [A_PX] * len(bboxes), matched)
    return l['classification'] + l['bbox_regression']

def per_image_loss(clas, bbox, bboxes, labels, anchors=ANCHORS, thresh=.5, neg_pos=3):
    "Reference: the paper's loss one image at a time, a forced match per object written as a loop."
    tot_loc, tot_conf, N = 0., 0., 0
    for b_c, b_bb, bb, lb in zip(clas, bbox, bboxes, labels):
        keep = (bb[:, 2] - bb[:, 0]) > 0
        bb, lb = (bb[keep] + 1) / 2, lb[keep]
        gt_clas = torch.zeros(len(anchors), dtype=torch.long, device=clas.device)
        if len(bb):
            ov = box_iou(bb, cthw2tlbr(anchors))
            gt_ov, gt_idx = ov.max(0)
            for i, a in enumerate(ov.argmax(1).tolist()): gt_idx[a], gt_ov[a] = i, 2.
            pos = gt_ov >= thresh
            gt_clas[pos] = lb[gt_idx[pos]]
            tot_loc = tot_loc + F.smooth_l1_loss(b_bb[pos], encode_boxes(bb[gt_idx[pos]], anchors[pos]), reduction='sum')
        ce = F.cross_entropy(b_c, gt_clas, reduction='none')
        n = int((gt_clas > 0).sum())
        hard = ce.detach().masked_fill(gt_clas > 0, -math.inf).argsort(descending=True)[:min(neg_pos * n, len(anchors) - n)]
        tot_conf = tot_conf + ce[gt_clas > 0].sum() + ce[hard].sum()
        N += n
    return (tot_loc + tot_conf) / max(N, 1)

def make_targets(bs, M, seed, C=20, n=None):
    "Random tlbr targets in [-1,1]; `n` objects per image (default 1..M with image 0 empty), padded with zero rows."
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(bs, M, 2, generator=g) * .8; wh = torch.rand(bs, M, 2, generator=g) * .5 + .02
    bb = torch.cat([xy, (xy + wh).clamp(max=1)], -1) * 2 - 1
    lb = torch.randint(1, C + 1, (bs, M), generator=g)
    if n is None: n = torch.randint(1, M + 1, (bs,), generator=g); n[0] = 0
    pad = torch.arange(M)[None] >= n[:, None]
    bb[pad], lb[pad] = 0., 0
    return bb, lb

def compare(f1, f2, bboxes, labels, seed=0, C=20):
    "Values and gradients of two losses `f(clas, bbox, bboxes, labels)` on the same continuous random head outputs."
    g = torch.Generator().manual_seed(seed + 100)
    c1 = torch.randn(len(bboxes), A, C + 1, generator=g).requires_grad_(); b1 = torch.randn(len(bboxes), A, 4, generator=g).requires_grad_()
    c2, b2 = c1.detach().clone().requires_grad_(), b1.detach().clone().requires_grad_()
    l1, l2 = f1(c1, b1, bboxes, labels), f2(c2, b2, bboxes, labels)
    l1.backward(); l2.backward()
    for t in (l1, c1.grad, b1.grad): assert torch.isfinite(t).all()
    assert torch.allclose(l1, l2, rtol=1e-5, atol=1e-5), (l1.item(), l2.item())
    assert torch.allclose(c1.grad, c2.grad, atol=1e-6) and torch.allclose(b1.grad, b2.grad, atol=1e-6)
    return l1.item()

@pytest.fixture(scope='module')
def tvm(): return tv_ssd()

def ours(clas, bbox, bboxes, labels, **kw): return MultiBoxLoss(ANCHORS, **kw)((clas, bbox), bboxes, labels)

@pytest.mark.parametrize('seed', range(5))
def test_loss_equals_torchvision(tvm, seed):
    bboxes, labels = make_targets(4, 8, seed)
    compare(ours, lambda *a: tv_loss(tvm, *a), bboxes, labels, seed)

@pytest.mark.parametrize('seed', range(3))
def test_loss_equals_per_image_reference(seed):
    bboxes, labels = make_targets(4, 8, seed)
    bboxes[1, :2] = torch.tensor([[-.9, -.9, -.75, -.75], [-.92, -.92, -.77, -.77]]); labels[1, :2] = torch.tensor([3, 5])  # one best box
    compare(ours, per_image_loss, bboxes, labels, seed)

@pytest.mark.parametrize('case', ['crowded', 'one_object', 'all_empty_m0', 'all_padding', 'some_empty'])
def test_loss_corner_cases(tvm, case):
    if case == 'crowded': bb, lb = make_targets(2, 60, 7, n=torch.tensor([60, 45]))
    elif case == 'one_object': bb, lb = torch.tensor([[[-.5, -.5, .2, .3]]]), torch.tensor([[3]])
    elif case == 'all_empty_m0': bb, lb = torch.zeros(3, 0, 4), torch.zeros(3, 0, dtype=torch.long)
    elif case == 'all_padding': bb, lb = torch.zeros(3, 4, 4), torch.zeros(3, 4, dtype=torch.long)
    else: bb, lb = make_targets(4, 3, 3, n=torch.tensor([0, 2, 0, 1]))
    l = compare(ours, lambda *a: tv_loss(tvm, *a), bb, lb)
    if case.startswith('all'): assert l == 0.
    if case == 'crowded': assert MultiBoxLoss(ANCHORS).match(bb, lb)[2].sum() > 300

def test_loss_ratio_alpha_and_parts(tvm):
    bboxes, labels = make_targets(3, 5, 11)
    old = tvm.neg_to_pos_ratio
    tvm.neg_to_pos_ratio = 1.
    try: compare(lambda *a: ours(*a, neg_pos=1), lambda *a: tv_loss(tvm, *a), bboxes, labels)
    finally: tvm.neg_to_pos_ratio = old
    c, b = torch.randn(3, A, 21), torch.randn(3, A, 4)
    conf, loc = MultiBoxLoss(ANCHORS).parts((c, b), bboxes, labels)
    assert torch.allclose(MultiBoxLoss(ANCHORS, alpha=2.)((c, b), bboxes, labels), conf + 2 * loc)

def test_loss_iou_threshold_is_inclusive():
    "IoU exactly 0.5 makes a positive (the paper's and torchvision's `>=`)."
    anchors = torch.tensor([[.25, .25, .5, .5], [.25, .125, .5, .25], [.75, .75, .5, .5]])   # IoU 1, .5, 0 with the object
    _, gt_idx, pos, gt_clas = MultiBoxLoss(anchors).match(torch.tensor([[[-1., -1, 0, 0]]]), torch.tensor([[2]]))
    assert pos.tolist() == [[True, True, False]] and gt_clas.tolist() == [[2, 2, 0]]
    assert MultiBoxLoss(anchors, iou_thresh=.51).match(torch.tensor([[[-1., -1, 0, 0]]]), torch.tensor([[2]]))[2].tolist() == [[True, False, False]]

def test_loss_takes_fastai_tensors():
    from fastai.vision.core import TensorBBox
    from fastai.torch_core import TensorMultiCategory, TensorBase
    bboxes, labels = make_targets(2, 4, 5)
    c, b = torch.randn(2, A, 21), torch.randn(2, A, 4)
    ref = MultiBoxLoss(ANCHORS)((c, b), bboxes, labels)
    got = MultiBoxLoss(ANCHORS)((TensorBase(c), TensorBase(b)), TensorBBox(bboxes), TensorMultiCategory(labels))
    assert type(got) is torch.Tensor and torch.allclose(got, ref)

# ---------------------------------------------------------------- decoding

def decode_loop(clas, bbox, anchors, score_thresh=.01, iou_thresh=.45, topk_candidates=400, max_det=200):
    "Reference: one image and one class at a time, with the hand-written `nms` of stage 2."
    res = []
    for c, bx in zip(clas, bbox):
        boxes, scores, dets = decode_boxes(bx, anchors).clamp(0, 1), F.softmax(c, -1), []
        for k in range(1, c.shape[1]):
            sc, idx = scores[:, k].topk(min(topk_candidates, len(anchors)))
            sc, idx = sc[sc > score_thresh], idx[sc > score_thresh]
            dets += [(float(sc[j]), boxes[idx[j]], k) for j in nms(boxes[idx], sc, iou_thresh, top_k=None)]
        dets = sorted(dets, key=lambda d: -d[0])[:max_det]
        res.append(dict(boxes=torch.stack([d[1] for d in dets]) if dets else bbox.new_zeros(0, 4),
                        scores=torch.tensor([d[0] for d in dets]), labels=torch.tensor([d[2] for d in dets], dtype=torch.long)))
    return res

def assert_same_dets(d1, d2, scale=1.):
    assert len(d1) == len(d2)
    for a, b in zip(d1, d2):
        assert torch.equal(a['labels'].cpu(), b['labels'].cpu())
        assert torch.allclose(a['scores'].cpu(), b['scores'].cpu(), atol=1e-6)
        assert torch.allclose(a['boxes'].cpu() * scale, b['boxes'].cpu(), atol=1e-5 * scale)

def fake_outputs(bs, C, seed, spread=2.):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(bs, A, C + 1, generator=g) * spread, torch.randn(bs, A, 4, generator=g)

KWS = [dict(), dict(score_thresh=.2, iou_thresh=.3, topk_candidates=100, max_det=50), dict(score_thresh=.05, iou_thresh=.6, max_det=300)]

@pytest.mark.parametrize('kw', KWS)
@pytest.mark.parametrize('C', [5, 20])
def test_decode_equals_torchvision(kw, C):
    clas, bbox = fake_outputs(2, C, C + len(kw))
    tvm = tv_ssd(C, score_thresh=kw.get('score_thresh', .01), nms_thresh=kw.get('iou_thresh', .45),
                 topk_candidates=kw.get('topk_candidates', 400), detections_per_img=kw.get('max_det', 200))
    ref = tvm.postprocess_detections(dict(cls_logits=clas, bbox_regression=bbox), [A_PX] * 2, [(300, 300)] * 2)
    got = decode_ssd(clas, bbox, ANCHORS, **kw)
    assert_same_dets(got, ref, scale=300.)
    assert all(len(d['scores']) > 0 for d in got)

@pytest.mark.parametrize('kw', KWS[:2])
def test_decode_equals_loop(kw):
    clas, bbox = fake_outputs(2, 5, 3)
    assert_same_dets(decode_ssd(clas, bbox, ANCHORS, **kw), decode_loop(clas, bbox, ANCHORS, **kw))

def test_decode_empty_images_and_limits():
    clas, bbox = fake_outputs(3, 5, 4, spread=4.)
    clas[1] = -20.; clas[1, :, 0] = 20.                                   # all background: no detection
    dets = decode_ssd(clas, bbox, ANCHORS, score_thresh=.3, max_det=7)
    assert [len(d['scores']) for d in dets] == [7, 0, 7]
    for d in dets:
        assert d['boxes'].shape[1] == 4 and torch.all((d['boxes'] >= 0) & (d['boxes'] <= 1))
        assert torch.all(d['scores'][:-1] >= d['scores'][1:]) and torch.all((d['labels'] >= 1) & (d['labels'] <= 5))
    with pytest.raises(ValueError, match='do not agree'): decode_ssd(clas, bbox[:, :10], ANCHORS)

# ---------------------------------------------------------------- CUDA (device-agnostic code, compared with the CPU)

@pytest.mark.cuda
def test_cuda_models_match_cpu(vgg_pair):
    "Float32 against float32: TF32 off (cuDNN's default TF32 convolutions differ from the CPU by ~3e-4 relative)."
    x = torch.randn(2, 3, 300, 300)
    for m in (vgg_pair[0], ssd_model(20, 'resnet18').eval()):  # a fresh one: the CPU tests share `rn18`
        with torch.no_grad(), torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
            ref = m(x)
            got = copy.deepcopy(m).cuda()(x.cuda())
        assert got[0].is_cuda
        assert torch.allclose(got[0].cpu(), ref[0], atol=1e-3, rtol=1e-3) and torch.allclose(got[1].cpu(), ref[1], atol=1e-3, rtol=1e-3)

@pytest.mark.cuda
def test_cuda_loss_matches_cpu():
    bboxes, labels = make_targets(8, 10, 0)
    clas, bbox = fake_outputs(8, 20, 0)
    res = {}
    for dev in ('cpu', 'cuda'):
        c, b = clas.detach().clone().to(dev).requires_grad_(), bbox.detach().clone().to(dev).requires_grad_()   # leaves on each device
        l = MultiBoxLoss(ANCHORS)((c, b), bboxes.to(dev), labels.to(dev))
        l.backward()
        assert l.device.type == dev
        res[dev] = (l.detach().cpu(), c.grad.cpu(), b.grad.cpu())
    for a, b in zip(res['cpu'], res['cuda']): assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)
    l0 = MultiBoxLoss(ANCHORS)((clas.cuda(), bbox.cuda()), torch.zeros(8, 0, 4).cuda(), torch.zeros(8, 0, dtype=torch.long).cuda())
    assert l0.item() == 0.

@pytest.mark.cuda
def test_cuda_decode_matches_cpu():
    clas, bbox = fake_outputs(4, 20, 1)
    got = decode_ssd(clas.cuda(), bbox.cuda(), ANCHORS.cuda())
    assert all(d['boxes'].is_cuda for d in got)
    assert_same_dets(got, decode_ssd(clas, bbox, ANCHORS))

@pytest.mark.parametrize('n', [300, 3999, 4001, 20000])
def test_nms_by_group_equals_batched_nms(n):
    from ssd_tutorial.decode import group_nms as _nms_by_group
    g = torch.Generator().manual_seed(n)
    ctr = torch.rand(n, 2, generator=g); wh = torch.rand(n, 2, generator=g) * .3 + .01
    boxes, scores = torch.cat([ctr - wh / 2, ctr + wh / 2], 1).clamp(0, 1), torch.rand(n, generator=g)
    groups = torch.randint(0, max(2, n // 300), (n,), generator=g).sort().values
    got, ref = _nms_by_group(boxes, scores, groups, .45), torchvision.ops.batched_nms(boxes, scores, groups, .45)
    assert set(got.tolist()) == set(ref.tolist()) and torch.all(scores[got][:-1] >= scores[got][1:])  # (float32 ties: any order)
