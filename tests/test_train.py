"The training layer (`ssd_tutorial.train`): stages, losses, read-outs, `train_detector` on SSD300, and the CLI on stage 3."
import json, pytest, torch
from ssd_tutorial.data import get_shapes, read_voc, SHAPES
from ssd_tutorial.loss import SSDLoss
from ssd_tutorial.train import load_checkpoint
from ssd_tutorial.loss import FocalLoss
from ssd_tutorial.decode import decode_preds
from ssd_tutorial.metrics import evaluate
from ssd_tutorial.loss import MultiBoxLoss
from ssd_tutorial.decode import decode_ssd
from ssd_tutorial.anchors import ssd_anchors
from ssd_tutorial.model import ssd_model
from ssd_tutorial.train import STAGES, LOSSES, stage_priors, make_loss, decode_softmax, stage_detect, train_detector
from ssd_tutorial.cli import main

@pytest.fixture(scope='module')
def shapes():
    path = get_shapes(16, 8, size=128, difficulty='easy', progress=False)
    return path, read_voc(path, 'train', SHAPES), read_voc(path, 'val', SHAPES)

@pytest.mark.parametrize('stage,size', [('grid4x4', 128), ('multigrid', 128), ('ssd', 300), ('ssd', 384)])
def test_priors_line_up_with_the_outputs(stage, size):
    m = STAGES[stage]['model'](3, backbone='resnet18', size=size).eval()
    anchors, gs = stage_priors(stage, m, size)
    with torch.no_grad(): clas, bbox = m(torch.randn(1, 3, size, size))
    assert anchors.shape == (clas.shape[1], 4) == (bbox.shape[1], 4) and clas.shape[2] == 4
    if stage == 'ssd':
        assert torch.allclose(anchors, ssd_anchors(fmaps=m.fmap_sizes(size)))
        assert (size == 300) == (len(anchors) == 8732)
        assert torch.is_tensor(gs) and gs.shape == (len(anchors), 1)

def test_make_loss_builds_each_loss_and_refuses_others():
    A, gs = stage_priors('grid4x4', None, 128)
    assert isinstance(make_loss('multibox', 5, A, gs), MultiBoxLoss)
    l = make_loss('focal', 5, A, gs)
    assert isinstance(l, SSDLoss) and isinstance(l.conf_loss, FocalLoss) and not l.per_positive
    assert make_loss('bce', 5, A, gs, per_positive=True).per_positive
    assert [s for s, st in STAGES.items() if st['per_positive']] == ['ssd']   # stages 1 and 2 keep their loss
    with pytest.raises(ValueError, match="unknown loss 'softmax'.*multibox"): make_loss('softmax', 5, A, gs)

def test_decode_softmax_is_decode_ssd_and_stage_detect_matches_the_loss():
    m = ssd_model(3, 'resnet18').eval()
    anchors, gs = stage_priors('ssd', m, 300)
    g = torch.Generator().manual_seed(0)
    clas, bbox = torch.randn(2, 8732, 4, generator=g) * 3, torch.randn(2, 8732, 4, generator=g) * .5
    for a, b in zip(decode_softmax(clas, bbox, anchors, gs, .2, .5, 50), decode_ssd(clas, bbox, anchors, .2, .5, max_det=50)):
        assert torch.equal(a['labels'], b['labels']) and torch.allclose(a['boxes'], b['boxes']) and torch.allclose(a['scores'], b['scores'])
    assert stage_detect('multibox') is decode_softmax and stage_detect('bce') is decode_preds and stage_detect('focal') is decode_preds

def test_train_detector_ssd_multibox_trains_and_evaluates_with_its_read_out(shapes):
    _, train, valid = shapes
    learn = train_detector(train, valid, SHAPES, 'ssd', bs=8, epochs=1, lr=1e-3, loss='multibox')
    assert learn.detect is decode_softmax and learn.anchors.shape == (8732, 4) and isinstance(learn.loss_func, MultiBoxLoss)
    assert learn.dls.train.one_batch()[0].shape[-1] == 300 and learn.train_iter == 2
    assert torch.isfinite(torch.tensor(learn.recorder.values[-1][:2])).all()
    res = evaluate(learn.model, valid, SHAPES, learn.anchors, learn.grid_size, 300, progress=False, detect=learn.detect)
    assert 0 <= res['voc07']['mAP'] <= 1 and len(res['dets']) == len(valid)

def test_train_detector_refuses_unknown_stage_and_loss(shapes):
    _, train, valid = shapes
    with pytest.raises(ValueError, match="unknown stage 'ssd512'"): train_detector(train, valid, SHAPES, 'ssd512')
    with pytest.raises(ValueError, match="unknown loss 'ce'"): train_detector(train, valid, SHAPES, 'ssd', loss='ce')

def test_cli_trains_and_evaluates_ssd_multibox_and_the_checkpoint_round_trips(shapes, tmp_path):
    path, _, valid = shapes
    out = tmp_path / 'out'
    assert main(['train', '--stage', 'ssd', '--size', '300', '--loss', 'multibox', '--data', str(path), '--epochs', '1', '--bs', '8', '--out', str(out)]) == 0
    model, cfg = load_checkpoint(out / 'ssd.pth', 'cuda' if torch.cuda.is_available() else 'cpu')   # where `evaluate` runs it
    assert (cfg['stage'], cfg['size'], cfg['loss'], cfg['backbone']) == ('ssd', 300, 'multibox', 'resnet18')
    assert main(['evaluate', '--ckpt', str(out / 'ssd.pth'), '--data', str(path), '--out', str(tmp_path / 'ev')]) == 0
    got = json.loads((tmp_path / 'ev' / 'metrics.json').read_text())
    anchors, gs = stage_priors('ssd', model, 300)
    want = {d: evaluate(model, valid, SHAPES, anchors, gs, 300, progress=False, detect=d) for d in (decode_softmax, decode_preds)}
    assert got['coco']['AP'] == pytest.approx(want[decode_softmax]['coco']['AP'], abs=1e-9)
    assert len(json.loads((tmp_path / 'ev' / 'detections.json').read_text())) == sum(len(d['scores']) for d in want[decode_softmax]['dets'])

def test_cli_refuses_vgg16_outside_ssd_before_reading_data(tmp_path, capsys):
    assert main(['train', '--stage', 'grid4x4', '--backbone', 'vgg16', '--data', str(tmp_path / 'nope'), '--out', str(tmp_path / 'o')]) == 1
    err = capsys.readouterr().err
    assert "backbone must be 'resnet18' or 'resnet34', got 'vgg16'" in err and 'nope' not in err

@pytest.mark.cuda
def test_train_detector_ssd_on_cuda_in_bf16(shapes):
    _, train, valid = shapes
    learn = train_detector(train, valid, SHAPES, 'ssd', bs=8, epochs=1, lr=1e-3, loss='multibox', bf16=True)
    assert next(learn.model.parameters()).is_cuda and torch.isfinite(torch.tensor(learn.recorder.values[-1][:2])).all()
    res = evaluate(learn.model, valid, SHAPES, learn.anchors, learn.grid_size, 300, progress=False, detect=learn.detect)
    assert 0 <= res['coco']['AP'] <= 1

def test_warm_start_copies_what_fits(tmp_path):
    "CPU: SSD300 from the 128 px SSD: every tensor of the same name and shape copied, the sixth map's left alone."
    from ssd_tutorial.train import warm_start
    from ssd_tutorial.checkpoint import save_checkpoint
    torch.manual_seed(0)
    src, dst = ssd_model(5, 'resnet18', size=128), ssd_model(5, 'resnet18', size=300)
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    ck = save_checkpoint(src, tmp_path / 'small', stage='ssd', classes=SHAPES, size=128, backbone='resnet18')
    n, total = warm_start(dst, ck)
    s, d = src.state_dict(), dst.state_dict()
    fits = [k for k in d if k in s and s[k].shape == d[k].shape]
    assert (n, total) == (len(fits), len(d)) and 0 < n < total
    assert all(torch.equal(d[k], s[k]) for k in fits)
    assert all(torch.equal(d[k], before[k]) for k in d if k not in fits)
    with pytest.raises(ValueError, match='small.pth'): warm_start(torch.nn.Linear(2, 2), ck)
    bad = tmp_path / 'cut.pth'; bad.write_bytes(ck.read_bytes()[:200])          # a download cut short
    with pytest.raises(ValueError, match='cut.pth: not a readable checkpoint'): warm_start(dst, bad)

def test_train_detector_init_starts_from_the_checkpoint(shapes, tmp_path):
    "CPU: `init` puts the checkpoint's weights in before training (zero epochs of change: lr tiny, one step)."
    from ssd_tutorial.checkpoint import save_checkpoint
    _, train, valid = shapes
    src = ssd_model(5, 'resnet18', size=128)
    ck = save_checkpoint(src, tmp_path / 'small', stage='ssd', classes=SHAPES, size=128, backbone='resnet18')
    learn = train_detector(train, valid, SHAPES, 'ssd', size=128, bs=16, epochs=1, lr=1e-12, loss='multibox', init=ck)
    w, v = learn.model.body.extras[0][0].weight, src.body.extras[0][0].weight
    assert torch.allclose(w.cpu(), v, atol=1e-6)
