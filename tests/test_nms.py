import torch, torchvision, pytest
from ssd_tutorial.boxes import *
from ssd_tutorial.anchors import *
from ssd_tutorial.model import *
from ssd_tutorial.loss import *
from ssd_tutorial.checkpoint import *
from ssd_tutorial.decode import *

def random_boxes(n, g):
    k = max(1, n // 8)
    ctr = torch.rand(k, 2, generator=g)[torch.randint(0, k, (n,), generator=g)] + torch.randn(n, 2, generator=g) * .05
    wh = torch.rand(n, 2, generator=g) * .3 + .01
    return torch.cat([ctr - wh / 2, ctr + wh / 2], 1)

@pytest.mark.parametrize('seed', range(5))
def test_nms_matches_torchvision(seed):
    g = torch.Generator().manual_seed(seed)
    for _ in range(60):
        n = int(torch.randint(1, 400, (1,), generator=g))
        boxes, scores = random_boxes(n, g) * 300, torch.rand(n, generator=g)
        t = float(torch.rand(1, generator=g)) * .9 + .05
        assert torch.equal(nms(boxes, scores, t, top_k=None), torchvision.ops.nms(boxes, scores, t))
        top = scores.argsort(descending=True)[:100]
        assert torch.equal(nms(boxes, scores, t), top[torchvision.ops.nms(boxes[top], scores[top], t)])

def test_nms_edge_cases():
    assert nms(torch.zeros(0, 4), torch.zeros(0)).shape == (0,)
    b = torch.tensor([[0., 0, 1, 1]])
    assert nms(b, torch.tensor([.3])).tolist() == [0]
    same = torch.tensor([[0., 0, 1, 1]] * 3)  # identical boxes: only the best survives
    assert nms(same, torch.tensor([.1, .9, .5])).tolist() == [1]

def fake_preds(bs, A, C, seed, p_hot=.03):
    g = torch.Generator().manual_seed(seed)
    clas = torch.randn(bs, A, C + 1, generator=g) - 5
    hot = torch.rand(bs, A, C + 1, generator=g) < p_hot
    return torch.where(hot, torch.randn(bs, A, C + 1, generator=g) + 2, clas), torch.randn(bs, A, 4, generator=g)

def assert_same(d1, d2):
    assert len(d1) == len(d2)
    for a, b in zip(d1, d2):
        assert torch.equal(a['labels'].cpu(), b['labels'].cpu())
        assert torch.allclose(a['scores'].cpu(), b['scores'].cpu(), atol=1e-6)
        assert torch.allclose(a['boxes'].cpu(), b['boxes'].cpu(), atol=1e-6)

@pytest.mark.parametrize('anchors,gs', [(grid_anchors(4), .25), (multi_anchors(), multi_grid_sizes())])
@pytest.mark.parametrize('kw', [{}, dict(score_thresh=.3, iou_thresh=.3, max_det=4), dict(score_thresh=.99)])
def test_decode_preds_equals_loop(anchors, gs, kw):
    clas, bbox = fake_preds(6, len(anchors), 5, len(anchors) + len(kw))
    clas[0] = -10.  # an image with nothing above the threshold
    got = decode_preds(clas, bbox, anchors, gs, **kw)
    assert_same(got, decode_loop(clas, bbox, anchors, gs, **kw))
    assert len(got[0]['scores']) == 0
    for d in got:
        assert torch.all((d['boxes'] >= 0) & (d['boxes'] <= 1)) and torch.all(d['labels'] >= 1) and torch.all(d['labels'] <= 5)
        assert torch.all(d['scores'][:-1] >= d['scores'][1:])
        assert len(d['scores']) <= kw.get('max_det', 100)

def test_decode_preds_max_det_is_per_image():
    clas, bbox = fake_preds(4, 189, 5, 0, p_hot=.5)
    full = decode_preds(clas, bbox, multi_anchors(), multi_grid_sizes(), max_det=1000)
    cut = decode_preds(clas, bbox, multi_anchors(), multi_grid_sizes(), max_det=7)
    for f, c in zip(full, cut):
        assert len(f['scores']) > 7 and len(c['scores']) == 7
        assert torch.equal(c['scores'], f['scores'][:7])

def test_decode_preds_shape_errors():
    clas, bbox = fake_preds(2, 16, 5, 0)
    with pytest.raises(ValueError, match='do not agree'): decode_preds(clas, bbox, multi_anchors(), multi_grid_sizes())

@pytest.mark.cuda
@pytest.mark.parametrize('n_anchors', [189, 8732])
def test_decode_preds_cuda_matches_cpu(n_anchors):
    if n_anchors == 189: anchors, gs = multi_anchors(), multi_grid_sizes()
    else:
        anchors = torch.rand(n_anchors, 4) * torch.tensor([1., 1., .5, .5]) + torch.tensor([0., 0., .02, .02])
        gs = torch.full((n_anchors, 1), .1)
    clas, bbox = fake_preds(32, n_anchors, 20, 1)
    cpu = decode_preds(clas, bbox, anchors, gs)
    gpu = decode_preds(clas.cuda(), bbox.cuda(), anchors.cuda(), gs.cuda())
    assert all(d['boxes'].is_cuda for d in gpu)
    assert_same(gpu, cpu)

@pytest.mark.parametrize('n,thresh', [(1, .45), (300, .45), (5000, .3), (12000, .45), (12000, .7)])
def test_padded_nms_keeps_what_batched_nms_keeps(n, thresh):
    "The GPU path of `group_nms`, run here on the CPU: the same kept boxes as torchvision (ties of equal scores in any order)."
    from ssd_tutorial.decode import _padded_nms
    g = torch.Generator().manual_seed(n)
    boxes, scores = random_boxes(n, g).clamp(0, 1), torch.rand(n, generator=g)
    groups = torch.randint(0, max(1, n // 20), (n,), generator=g)
    boxes[:3] = torch.tensor([[.2, .2, .2, .5]] * 3)[:min(3, n)]                 # zero-area boxes: never suppress, never suppressed
    ref = torchvision.ops.batched_nms(boxes, scores, groups, thresh)
    for max_pairs in (2**26, 7000):
        got = _padded_nms(boxes, scores, groups, thresh, max_pairs=max_pairs)
        assert set(got.tolist()) == set(ref.tolist()) and len(got) == len(ref) and torch.all(scores[got][:-1] >= scores[got][1:])
    assert _padded_nms(boxes[:0], scores[:0], groups[:0], thresh).shape == (0,)
    assert set(_padded_nms(boxes, scores, groups, thresh, max_mask=10).tolist()) == set(ref.tolist())   # over the mask budget: batched_nms

@pytest.mark.cuda
def test_group_nms_on_cuda_above_4000_boxes():
    "On a GPU, `group_nms` goes through `_padded_nms` above 4000 boxes: the same kept boxes as on the CPU."
    from ssd_tutorial.decode import group_nms
    g = torch.Generator().manual_seed(0)
    boxes, scores = random_boxes(20000, g).clamp(0, 1), torch.rand(20000, generator=g)
    groups = torch.randint(0, 1280, (20000,), generator=g)
    got = group_nms(boxes.cuda(), scores.cuda(), groups.cuda(), .45)
    assert got.is_cuda and set(got.cpu().tolist()) == set(torchvision.ops.batched_nms(boxes, scores, groups, .45).tolist())
