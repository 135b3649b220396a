import subprocess, sys
from ssd_tutorial.cli import main

def run(*args, **kw):
    return subprocess.run([sys.executable, '-c', 'import sys; from ssd_tutorial.cli import main; sys.exit(main())', *args],
                          capture_output=True, text=True, **kw)

def test_data_command(tmp_path):
    r = run('data', '--n-train', '16', '--n-valid', '4', '--out', str(tmp_path / 'out'), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert '20 images' in r.stdout and 'objects per class' in r.stdout
    assert (tmp_path / 'out' / 'shapes_samples.png').stat().st_size > 10_000

import pytest

@pytest.mark.parametrize('args', [['data', '--n-train', '0'], ['data', '--difficulty', 'insane'], ['nope'], []])
def test_bad_arguments_no_traceback(args, capsys):
    with pytest.raises(SystemExit) as e: main(args)
    err = capsys.readouterr().err
    assert e.value.code == 2 and 'Traceback' not in err and 'error' in err

def test_bad_arguments_subprocess(tmp_path):
    r = run('data', '--size', '-3', cwd=tmp_path)
    assert r.returncode == 2 and 'Traceback' not in r.stderr and 'must be a positive integer' in r.stderr

def test_console_script_installed():
    import shutil
    assert shutil.which('ssd-tutorial'), 'console script ssd-tutorial not on PATH'

def test_evaluate_missing_checkpoint_is_one_line(tmp_path, capsys):
    assert main(['evaluate', '--ckpt', str(tmp_path / 'nope.pth'), '--out', str(tmp_path / 'out')]) == 1
    err = capsys.readouterr().err
    assert 'nope.pth: checkpoint not found' in err and 'Traceback' not in err

def test_train_rejects_unknown_loss(capsys):
    with pytest.raises(SystemExit) as e: main(['train', '--loss', 'hinge'])
    assert e.value.code == 2 and "invalid choice: 'hinge'" in capsys.readouterr().err

@pytest.mark.parametrize('flag,aug', [('none', False), ('flip', True), ('ssd', 'ssd'), ('ssd-no-zoom', 'ssd-no-zoom')])
def test_train_passes_aug_to_train_detector(flag, aug, tmp_path, monkeypatch):
    import ssd_tutorial.cli as cli
    seen = {}
    def fake(*a, **kw): seen['aug'] = a[14] if len(a) > 14 else kw.get('aug'); raise RuntimeError('stopped by the test')
    monkeypatch.setattr(cli, 'train_detector', fake)
    assert main(['train', '--aug', flag, '--n-train', '4', '--n-valid', '2', '--epochs', '1', '--out', str(tmp_path / 'o')]) != 0
    assert seen['aug'] == aug and type(seen['aug']) is type(aug)

def test_train_defaults_are_the_recipe():
    "`ssd-tutorial train` with no option trains the course's CPU recipe (`RECIPE`); the stage picks its lesson's loss."
    from ssd_tutorial.cli import get_parser, RECIPE, STAGE_LOSS
    a = get_parser().parse_args(['train'])
    assert {k: getattr(a, k) for k in RECIPE if k != 'size'} == {k: v for k, v in RECIPE.items() if k != 'size'}
    assert (a.data, a.difficulty, a.backbone, a.aug, a.pretrained) == ('shapes', 'easy', 'resnet18', 'none', False)
    assert a.size is a.loss is a.bf16 is None   # settled by cmd_train from the device and the stage
    assert STAGE_LOSS == {'grid4x4': 'bce', 'multigrid': 'bce', 'ssd': 'multibox'}
    assert get_parser().parse_args(['train', '--no-bf16']).bf16 is False

@pytest.mark.parametrize('stage,loss', [(None, 'multibox'), ('grid4x4', 'bce'), ('multigrid', 'bce')])
def test_train_settles_size_loss_bf16_on_cpu(stage, loss, tmp_path, monkeypatch):
    "On the CPU: 128 px whatever the stage, the stage's loss, bfloat16 as `bf16_native` says; `demo` is `train`'s defaults."
    import ssd_tutorial.cli as cli
    from ssd_tutorial.train import bf16_native
    monkeypatch.setattr(cli.torch.cuda, 'is_available', lambda: False)
    seen = {}
    def fake(*a, **kw): seen.update(kw); raise RuntimeError('stopped by the test')
    monkeypatch.setattr(cli, 'train_detector', fake)
    argv = ['train', '--n-train', '4', '--n-valid', '2', '--out', str(tmp_path / 'o')] + (['--stage', stage] if stage else [])
    assert main(argv) != 0
    assert (seen['stage'], seen['size'], seen['loss'], seen['bf16']) == (stage or 'ssd', 128, loss, bf16_native('cpu'))
    if stage: return
    seen.clear()
    assert main(['demo', '--n-train', '4', '--out', str(tmp_path / 'd')]) != 0
    assert (seen['stage'], seen['size'], seen['loss'], seen['epochs'], seen['lr']) == ('ssd', 128, 'multibox', 2, cli.RECIPE['lr'])

def test_train_rejects_unknown_aug(capsys):
    with pytest.raises(SystemExit) as e: main(['train', '--aug', 'mixup'])
    assert e.value.code == 2 and "invalid choice: 'mixup'" in capsys.readouterr().err

def _tiny(n_train=32, n_valid=8):
    from ssd_tutorial.data import get_shapes, read_voc, SHAPES
    path = get_shapes(n_train, n_valid, size=128, difficulty='easy', progress=False)
    return read_voc(path, 'train', SHAPES), read_voc(path, 'val', SHAPES), SHAPES

def test_bf16_training_autocasts_and_leaves_float32_weights():
    import torch
    from ssd_tutorial.train import train_detector, BF16Training
    train, valid, classes = _tiny()
    seen = {}
    import fastai.learner
    class Spy(fastai.learner.Callback):
        order = 20   # after BF16Training (10): see what the model sees
        def before_batch(self):
            seen.setdefault('cl', self.xb[0].is_contiguous(memory_format=torch.channels_last))
            seen.setdefault('autocast', torch.is_autocast_enabled(self.xb[0].device.type))   # on the device the batch is on
        def after_pred(self): seen.setdefault('pred', [p.dtype for p in self.pred])
    learn = train_detector(train, valid, classes, epochs=1, lr=1e-3, bf16=True)
    learn.add_cb(Spy()); learn.fit(1, 1e-4)
    assert seen['cl'] and seen['autocast'] and seen['pred'] == [torch.float32, torch.float32]   # preds back in float32 for the loss
    assert all(p.dtype == torch.float32 and p.is_contiguous() for p in learn.model.parameters())  # layout restored after fit
    assert torch.isfinite(torch.tensor(learn.recorder.values[-1][:2])).all()
    assert any(isinstance(cb, BF16Training) for cb in learn.cbs)

def test_bf16_loss_close_to_float32():
    "One batch, same weights: the bfloat16 forward gives the float32 loss to within 2%."
    import torch, copy
    from fastai.vision.all import Learner
    from ssd_tutorial.data import get_dls
    from ssd_tutorial.train import STAGES, BF16Training, make_loss, stage_priors
    train, valid, classes = _tiny()
    dls = get_dls(train, valid, classes, size=128, bs=8)
    st = STAGES['multigrid']
    torch.manual_seed(0); m = st['model'](len(classes), backbone='resnet18', size=128)
    loss = lambda model, cbs: Learner(dls, model, loss_func=make_loss('focal', len(classes), *stage_priors('multigrid', m, 128)), cbs=cbs).validate()[0]
    l32, l16 = loss(copy.deepcopy(m), []), loss(copy.deepcopy(m), [BF16Training()])
    assert l16 != l32 and abs(l16 - l32) / l32 < .02, (l16, l32)

def test_bf16_native_is_a_bool():
    import torch
    from ssd_tutorial.train import bf16_native
    assert isinstance(bf16_native('cpu'), bool)
    if not torch.cuda.is_available(): assert bf16_native('cuda') is False

def test_evaluate_prints_and_draws_tide_errors(tmp_path, capsys):
    "`evaluate` prints TIDE's breakdown (AP50, 8 dAPs, error counts) under the AP table and writes errors.png."
    import torch
    from ssd_tutorial.data import make_shapes, SHAPES
    from ssd_tutorial.model import grid_model
    from ssd_tutorial.checkpoint import save_checkpoint, CheckpointConfig
    shapes = make_shapes(tmp_path / 'shapes', n_train=2, n_valid=6, size=128, progress=False)
    torch.manual_seed(0)   # untrained: many detections, mostly errors
    ck = save_checkpoint(grid_model(len(SHAPES), backbone='resnet18', size=128),
                         tmp_path / 'grid', CheckpointConfig('grid4x4', SHAPES, 128, 'resnet18', 'bce'))
    assert main(['evaluate', '--ckpt', str(ck), '--data', str(shapes), '--out', str(tmp_path / 'eval')]) == 0
    out = capsys.readouterr().out
    assert out.index('mean ') < out.index('TIDE errors') < out.index('detections (COCO')
    row = out[out.index('TIDE errors'):].splitlines()[2].split()
    n = [int(v) for v in out[out.index('TIDE errors'):].splitlines()[3].split()[1:]]
    assert len(row) == 9 and sum(n) > 0 and all(0 <= float(v) <= 1 for v in row)
    assert (tmp_path / 'eval' / 'errors.png').stat().st_size > 5_000 and (tmp_path / 'eval' / 'pr_curves.png').exists()

def test_train_init_reaches_train_detector(tmp_path, monkeypatch):
    "CPU: `--init CKPT` is handed to `train_detector` (which warm-starts from it, tests/test_train.py); none by default."
    import ssd_tutorial.cli as cli
    seen = {}
    def fake(*a, **kw): seen.update(kw); raise RuntimeError('stopped by the test')
    monkeypatch.setattr(cli, 'train_detector', fake)
    base = ['train', '--n-train', '4', '--n-valid', '2', '--out', str(tmp_path / 'o')]
    assert main(base + ['--init', str(tmp_path / 'small.pth')]) != 0
    assert seen['init'] == str(tmp_path / 'small.pth')
    seen.clear()
    assert main(base) != 0 and seen['init'] is None
