"Nothing lost, nothing silent: the losses, checkpoints and the `train`/`evaluate` commands under bad input (issue 10)."
import json, os, subprocess, sys, warnings, pytest, torch
from pathlib import Path
from ssd_tutorial.data import get_shapes, read_voc, SHAPES, Record
from ssd_tutorial.loss import SSDLoss, bce_conf_loss
from ssd_tutorial.anchors import grid_anchors
from ssd_tutorial.model import grid_model
from ssd_tutorial.checkpoint import save_checkpoint
from ssd_tutorial.train import load_checkpoint
from ssd_tutorial.anchors import multi_anchors, multi_grid_sizes
from ssd_tutorial.model import multi_model
from ssd_tutorial.loss import FocalLoss
from ssd_tutorial import cli
from ssd_tutorial.cli import main
from ssd_tutorial.train import train_detector, NonFiniteLoss, LOSSES

@pytest.fixture(scope='module')
def shapes():
    return get_shapes(32, 8, size=128, difficulty='easy', progress=False)

def args(shapes, out, *more): return ['train', '--stage', 'grid4x4', '--data', str(shapes), '--epochs', '1', '--bs', '8', '--out', str(out), *more]

def err_lines(capsys): return [l for l in capsys.readouterr().err.splitlines() if l.startswith('ssd-tutorial')]

# --- the losses with no objects ----------------------------------------------------------------------------------

@pytest.mark.parametrize('conf', ['bce', 'focal'])
@pytest.mark.parametrize('case', ['all_empty', 'some_empty', 'one_object'])
def test_loss_without_objects_is_finite_and_equals_padding(conf, case):
    A, gs = multi_anchors(), multi_grid_sizes()
    conf_loss = bce_conf_loss if conf == 'bce' else FocalLoss(5)
    g = torch.Generator().manual_seed(0)
    clas, bbox = torch.randn(3, len(A), 6, generator=g, requires_grad=True), torch.randn(3, len(A), 4, generator=g, requires_grad=True)
    bb = {'all_empty': torch.zeros(3, 0, 4), 'some_empty': torch.tensor([[[-.5, -.5, .5, .5]], [[0.] * 4], [[0.] * 4]]),
          'one_object': torch.tensor([[[-.9, -.2, .1, .6]]] * 3)}[case]
    lb = (bb[..., 2] > bb[..., 0]).long() * 2
    loss = SSDLoss(A, gs, conf_loss=conf_loss)((clas, bbox), bb, lb)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(clas.grad).all() and torch.isfinite(bbox.grad).all()
    pad = lambda t, v: torch.cat([t, torch.full_like(t[:, :1], v)], 1) if t.shape[1] == 0 else torch.cat([t, t[:, :1] * 0], 1)
    ref = SSDLoss(A, gs, conf_loss=conf_loss)((clas.detach(), bbox.detach()), pad(bb, 0.), pad(lb, 0))   # one more padding row
    assert torch.allclose(loss.detach(), ref, rtol=1e-6)
    if case == 'all_empty':   # nothing to localise; every anchor is background
        assert bbox.grad.abs().sum() == 0
        assert torch.allclose(loss.detach(), conf_loss(clas.detach(), torch.zeros(3, len(A), dtype=torch.long)), rtol=1e-6)

def test_training_on_images_without_objects_at_bs_1(shapes):
    "The crash of the issue: a batch in which no image has an object (bs 1 on images of background only)."
    train, valid = read_voc(shapes, 'train', SHAPES)[:6], read_voc(shapes, 'val', SHAPES)
    empty = [Record(r.fname, torch.zeros(0, 4), [], torch.zeros(0), size=r.size) for r in train[:3]]
    learn = train_detector(empty + train[3:], valid, SHAPES, stage='grid4x4', bs=1, epochs=1, lr=1e-4, loss='focal')
    assert torch.isfinite(torch.tensor(learn.recorder.values[-1][:2])).all() and learn.train_iter == 6
    learn = train_detector(empty + empty + train[3:5], valid, SHAPES, stage='multigrid', bs=2, epochs=1, lr=1e-4, loss='focal')
    assert torch.isfinite(torch.tensor(learn.recorder.values[-1][:2])).all() and learn.train_iter == 4

def test_multigrid_at_batch_size_1_is_a_clear_error(shapes, tmp_path, capsys):
    assert main(args(shapes, tmp_path, '--stage', 'multigrid', '--bs', '1')) == 1
    assert err_lines(capsys) == ['ssd-tutorial train: error: the multigrid model needs a batch size of at least 2 to train (batch norm on a 1x1 map), got 1']

# --- output folders and the checkpoint ---------------------------------------------------------------------------

def test_out_that_is_a_file_fails_before_any_work(shapes, tmp_path, capsys):
    (tmp_path / 'f').write_text('x')
    assert main(args(shapes, tmp_path / 'f')) == 1
    out = capsys.readouterr()
    assert 'data:' not in out.out and 'is a file, not a folder' in out.err and 'Traceback' not in out.err

def test_out_that_cannot_be_written_fails_before_any_work(shapes, capsys):
    assert main(args(shapes, '/proc/ssd_tutorial_out')) == 1     # not writable, even by root
    out = capsys.readouterr()
    assert 'data:' not in out.out and 'cannot write to the output folder' in out.err

def test_checkpoint_first_and_previous_one_kept(shapes, tmp_path, capsys, monkeypatch):
    out = tmp_path / 'o'
    assert main(args(shapes, out)) == 0
    first = (out / 'grid4x4.pth').read_bytes()
    monkeypatch.setattr(cli, 'evaluate', lambda *a, **k: 1 / 0)            # the optional part fails after training
    assert main(args(shapes, out, '--seed', '1')) == 1
    err = err_lines(capsys)
    assert len(err) == 1 and 'ZeroDivisionError after training' in err[0] and f'the trained model is saved in {out / "grid4x4.pth"}' in err[0]
    assert (out / 'grid4x4.prev.pth').read_bytes() == first and (out / 'grid4x4.pth').read_bytes() != first
    load_checkpoint(out / 'grid4x4.pth'); load_checkpoint(out / 'grid4x4.prev.pth')

def test_save_checkpoint_is_atomic(tmp_path, monkeypatch):
    m = grid_model(5, backbone='resnet18', size=128)
    ck = save_checkpoint(m, tmp_path / 'g', stage='grid4x4', classes=SHAPES, size=128, backbone='resnet18')
    before = ck.read_bytes()
    def dies(obj, f): Path(f).write_bytes(b'half a checkpoint'); raise OSError(28, 'No space left on device')
    monkeypatch.setattr(torch, 'save', dies)
    with pytest.raises(OSError): save_checkpoint(m, ck, stage='grid4x4', classes=SHAPES, size=128, backbone='resnet18')
    assert ck.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ['g.json', 'g.pth']

# --- silent no-ops ------------------------------------------------------------------------------------------------

def test_batch_size_larger_than_the_data_is_lowered_with_a_warning(shapes, tmp_path, capsys):
    assert main(['train', '--stage', 'grid4x4', '--data', str(shapes), '--epochs', '1', '--bs', '100', '--out', str(tmp_path)]) == 0
    err, out = capsys.readouterr()[::-1]
    assert 'batch size 100 is larger than the 32 training images: using batch size 32' in err
    assert 'train loss nan' not in out
    m, _ = load_checkpoint(tmp_path / 'grid4x4.pth')
    assert not torch.equal(m.state_dict()['head.out.oconv1.bias'], torch.full_like(m.state_dict()['head.out.oconv1.bias'], -3.))  # it trained

@pytest.mark.parametrize('lr', ['0', '-0.001', 'nan', 'inf', 'abc'])
def test_bad_learning_rate_is_refused(lr, capsys):
    with pytest.raises(SystemExit) as e: main(['train', '--lr', lr])
    assert e.value.code == 2 and 'must be a positive number' in capsys.readouterr().err

def test_train_detector_refuses_bad_lr(shapes):
    train, valid = read_voc(shapes, 'train', SHAPES), read_voc(shapes, 'val', SHAPES)
    for lr in (0., -1., float('nan'), float('inf')):
        with pytest.raises(ValueError, match='learning rate must be a positive number'): train_detector(train, valid, SHAPES, lr=lr, epochs=1)

def nan_from_call(k):
    n = [0]
    def conf(logits, gt): n[0] += 1; return bce_conf_loss(logits, gt) * (float('nan') if n[0] >= k else 1.)
    return lambda n_classes: conf

def test_nan_loss_stops_with_epoch_and_batch_and_keeps_last_good_weights(shapes):
    train, valid = read_voc(shapes, 'train', SHAPES), read_voc(shapes, 'val', SHAPES)
    seen = []
    import fastai.learner
    class Spy(fastai.learner.Callback):
        order = 20
        def after_loss(self):
            if self.training and torch.isfinite(self.loss): seen.append({k: v.clone() for k, v in self.model.state_dict().items()})
    LOSSES['diverging'] = nan_from_call(7)   # 4 training batches per epoch, then 1 validation batch: call 7 = epoch 2, batch 2
    try:
        with pytest.raises(NonFiniteLoss, match=r'loss became nan at epoch 2/2, batch 2/4.*\(epoch 2, batch 1\)') as e:
            _fit_with(train, valid, Spy())
    finally: del LOSSES['diverging']
    sd = e.value.learn.model.state_dict()
    assert len(seen) == 5 and all(torch.equal(sd[k], seen[-1][k]) for k in sd)            # the weights of the last finite batch
    assert not all(torch.equal(sd[k], seen[-2][k]) for k in sd)

def _fit_with(train, valid, spy):
    "train_detector with an extra callback (the spy) added to the learner before it fits."
    from fastai.learner import Learner
    orig = Learner.fit_one_cycle
    def fit(self, *a, **k): self.add_cb(spy); return orig(self, *a, **k)
    Learner.fit_one_cycle = fit
    try: return train_detector(train, valid, SHAPES, bs=8, epochs=2, lr=1e-3, loss='diverging')
    finally: Learner.fit_one_cycle = orig

def test_nan_loss_in_the_cli_saves_the_last_good_weights(shapes, tmp_path, capsys):
    LOSSES['diverging'] = nan_from_call(3)
    try: assert main(args(shapes, tmp_path, '--loss', 'diverging', '--epochs', '2')) == 1
    finally: del LOSSES['diverging']
    err = err_lines(capsys)
    assert len(err) == 1 and 'at epoch 1/2, batch 3/4' in err[0] and f'those weights are saved in {tmp_path / "grid4x4.pth"}' in err[0]
    m, _ = load_checkpoint(tmp_path / 'grid4x4.pth')
    assert all(torch.isfinite(v).all() for v in m.state_dict().values())

# --- one-line errors ----------------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def ckpts(tmp_path_factory):
    d = tmp_path_factory.mktemp('ck')
    good = save_checkpoint(grid_model(5, backbone='resnet18', size=128), d / 'good', stage='grid4x4', classes=SHAPES, size=128, backbone='resnet18')
    cfg = good.with_suffix('.json').read_text()
    def pair(name, pth:bytes, js:bytes):
        (d / f'{name}.pth').write_bytes(pth); (d / f'{name}.json').write_bytes(js)
    pair('truncated', good.read_bytes()[:5000], cfg.encode())
    pair('empty', b'', cfg.encode())
    pair('badjson', good.read_bytes(), b'{"stage": "grid4x4", ')
    pair('latin1', good.read_bytes(), cfg.replace('circle', 'c\xeercle').encode('latin-1'))
    pair('nokeys', good.read_bytes(), b'{"stage": "grid4x4"}')
    pair('nostage', good.read_bytes(), cfg.replace('grid4x4', 'ssd512').encode())
    save_checkpoint(multi_model(5, backbone='resnet18', size=128), d / 'otherstage', stage='grid4x4', classes=SHAPES, size=128, backbone='resnet18')
    torch.save({'model': grid_model(5, backbone='resnet18', size=128).state_dict()}, d / 'foreign.pth'); (d / 'foreign.json').write_text(cfg)
    torch.save(torch.nn.Linear(2, 2), d / 'pickled.pth'); (d / 'pickled.json').write_text(cfg)
    torch.save(torch.zeros(3), d / 'tensor.pth'); (d / 'tensor.json').write_text(cfg)
    return d

@pytest.mark.parametrize('name,msg', [
    ('truncated', 'truncated.pth: not a readable checkpoint'), ('empty', 'empty.pth: not a readable checkpoint'),
    ('badjson', 'badjson.json: not a checkpoint config (not UTF-8 JSON'), ('latin1', 'latin1.json: not a checkpoint config (not UTF-8 JSON'),
    ('nokeys', "nokeys.json: not a checkpoint config (missing ['classes', 'size', 'backbone'])"),
    ('nostage', "nostage.json: unknown stage 'ssd512'"),
    ('otherstage', 'otherstage.pth: weights do not fit a grid4x4 model with 5 classes'),
    ('foreign', 'foreign.pth: weights do not fit a grid4x4 model'),
    ('pickled', 'pickled.pth: not a readable checkpoint (truncated, or not written by save_checkpoint: it holds pickled objects'),
    ('tensor', 'tensor.pth: not a checkpoint (holds a Tensor, not a state dict)'),
    ('missing', 'missing.pth: checkpoint not found')])
def test_bad_checkpoint_is_one_line(ckpts, name, msg, tmp_path, capsys):
    assert main(['evaluate', '--ckpt', str(ckpts / f'{name}.pth'), '--out', str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert msg in err and 'Traceback' not in err and len(err.strip().splitlines()) == 1, err

def test_unexpected_error_is_one_line_and_debug_shows_it(shapes, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, 'load_dataset', lambda *a, **k: {}['boom'])
    assert main(args(shapes, tmp_path)) == 1
    assert err_lines(capsys) == ["ssd-tutorial train: error: KeyError: 'boom'"]
    monkeypatch.setenv('SSD_TUTORIAL_DEBUG', '1')
    with pytest.raises(KeyError): main(args(shapes, tmp_path))

def test_warnings_are_one_line_each(shapes, tmp_path):
    r = subprocess.run([sys.executable, '-c', 'import sys; from ssd_tutorial.cli import main; sys.exit(main())',
                        *args(shapes, tmp_path, '--bs', '64')], capture_output=True, text=True, env={**os.environ, 'PYTHONWARNINGS': ''})
    assert r.returncode == 0, r.stderr
    warn = [l for l in r.stderr.splitlines() if 'batch size 64' in l]
    assert warn == ['ssd-tutorial train: warning: batch size 64 is larger than the 32 training images: using batch size 32']
