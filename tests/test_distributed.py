"DDP with two processes on the CPU (gloo), launched by torchrun: parity with one process, the CLI, a crash (07b_distributed)."
import json, time, pytest, torch
from torch import nn
from ssd_tutorial.distributed import *
from ssd_tutorial.train import load_checkpoint

CPU = {'CUDA_VISIBLE_DEVICES': ''}   # these tests are of gloo on the CPU: the processes see no GPU even where there is one

def _checks(out:str)->list: return [json.loads(l.split(' ', 1)[1]) for l in out.splitlines() if l.startswith('DDP_CHECK ')]

def test_single_process_pieces():
    assert init_distrib() == 1 and not torch.distributed.is_initialized()   # outside torchrun: nothing to join
    assert scale_lr(1e-3, 8) == 8e-3 and abs(scale_lr(1e-3, 4, 'sqrt') - 2e-3) < 1e-12 and scale_lr(1e-3, 8, 'none') == 1e-3
    with pytest.raises(ValueError, match='cubic'): scale_lr(1e-3, 2, 'cubic')
    bn, x = nn.BatchNorm2d(3), torch.randn(4, 3, 5, 5) * 2 + 1
    m = convert_sync_bn(nn.Sequential(nn.Conv2d(3, 3, 1), nn.Sequential(nn.BatchNorm2d(3))))
    assert type(m[1][0]) is AllReduceBatchNorm
    sbn = convert_sync_bn(nn.Sequential(nn.BatchNorm2d(3)))[0]
    torch.testing.assert_close(sbn(x), bn(x)); torch.testing.assert_close(sbn.running_var, bn.running_var)   # no group: batch norm
    assert first_on_rank0(lambda a, b=0: a + b, 1, b=2) == 3

def test_more_processes_than_gpus_is_a_one_line_error(monkeypatch):
    "Two processes on a machine with one GPU: refused before any process group is joined (simulated on any machine)."
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True); monkeypatch.setattr(torch.cuda, 'device_count', lambda: 1)
    monkeypatch.setattr(torch.cuda, 'set_device', lambda d: pytest.fail('set_device called'))
    for k, v in dict(WORLD_SIZE='2', LOCAL_WORLD_SIZE='2', RANK='1', LOCAL_RANK='1').items(): monkeypatch.setenv(k, v)
    with pytest.raises(RuntimeError, match=r"2 processes on this machine but 1 GPU: start at most 1 \(torchrun --nproc_per_node\), or hide the GPUs"): init_distrib()
    assert not torch.distributed.is_initialized()

SCRIPT = """import json, os, time, torch, torch.distributed as dist
from fastai.torch_core import rank_distrib
from ssd_tutorial.distributed import *
init_distrib(timeout=120)
def log(): # process 0 must finish before any other starts
    with open(os.environ['ORDER_LOG'], 'a') as f: f.write(f'{rank_distrib()} start\\n')
    time.sleep(.5)
    with open(os.environ['ORDER_LOG'], 'a') as f: f.write(f'{rank_distrib()} end\\n')
first_on_rank0(log)
for kw in [dict(bn='sync', dtype=torch.float64), dict(bn='eval', dtype=torch.float32), dict(bn='local', dtype=torch.float32)]:
    r = ddp_check(**kw)
    if r: print('DDP_CHECK', json.dumps(r), flush=True)
dist.destroy_process_group()   # leave the group before exiting (gloo can abort a process that exits inside it)
"""

def test_ddp_parity_two_processes(tmp_path):
    (s := tmp_path / 'check.py').write_text(SCRIPT)
    res = torchrun([s], timeout=240, env={'ORDER_LOG': str(tmp_path / 'order.log'), **CPU})
    assert res.returncode == 0, res.stdout[-3000:]
    assert (tmp_path / 'order.log').read_text().split('\n')[:4] == ['0 start', '0 end', '1 start', '1 end']
    sync, ev, local = _checks(res.stdout)
    for c in (sync, ev, local): assert c['processes'] == 2 and c['backend'] == 'gloo' and c['global_batch'] == 8 and c['weights_diff'] == 0, c
    # the first step's DDP gradient = one process's on the same global batch of 8
    assert sync['grad_diff'] < 1e-5 * max(1, sync['grad_max']) and sync['bn_stats_diff'] < 1e-12, sync   # batch norm synchronised (float64)
    assert ev['grad_diff'] < 1e-5 * max(1, ev['grad_max']), ev                                          # batch norm in eval mode (float32)
    assert local['grad_diff'] > 1e-2 and local['bn_stats_diff'] > 0, local   # each process's own statistics: not the global batch's

def test_cli_train_two_processes(tmp_path):
    out = tmp_path / 'out'
    res = torchrun(['ssd-tutorial', 'train', '--stage', 'grid4x4', '--n-train', 16, '--n-valid', 8, '--bs', 4, '--epochs', 1, '--sync-bn', '--out', out], python=False, timeout=300, env=CPU)
    assert res.returncode == 0, res.stdout[-3000:]
    assert 'DDP: 2 processes (gloo), batch 4 each: global batch 8; learning rate 0.002 x 2 = 0.004 (linear scaling); batch norm synchronised' in res.stdout
    for line in ('data: shapes', 'trained grid4x4', 'checkpoint: ', 'validation mAP'): assert res.stdout.count(line) == 1, line   # process 0 alone
    assert sorted(p.name for p in out.iterdir()) == ['grid4x4.json', 'grid4x4.pth', 'predictions.png']   # written once (no .prev)
    model, cfg = load_checkpoint(out / 'grid4x4.pth')
    assert cfg['stage'] == 'grid4x4' and not any(isinstance(m, AllReduceBatchNorm) for m in model.modules())
    with torch.no_grad(): clas, bbox = model.eval()(torch.zeros(1, 3, 128, 128))
    assert clas.shape == (1, 16, 6) and torch.isfinite(clas).all()

def test_crash_in_one_process_ends_the_run(tmp_path):
    (s := tmp_path / 'crash.py').write_text("from ssd_tutorial.distributed import *\ninit_distrib(timeout=60)\nddp_check(crash_rank=1)\n")
    t0 = time.time()
    res = torchrun([s], timeout=180, env=CPU)
    assert res.returncode != 0 and time.time() - t0 < 180
    assert 'process 1 fails on purpose' in res.stdout and 'ChildFailedError' in res.stdout, res.stdout[-3000:]

@pytest.mark.cuda
def test_ddp_parity_two_gpus(tmp_path):
    if torch.cuda.device_count() < 2: pytest.skip('needs 2 GPUs')
    (s := tmp_path / 'check.py').write_text("import json, torch\nfrom ssd_tutorial.distributed import *\n"
                                            "for bn in ('sync', 'eval'):\n    r = ddp_check(bn=bn, dtype=torch.float64)\n    if r: print('DDP_CHECK', json.dumps(r), flush=True)\n"
                                            "torch.distributed.destroy_process_group()\n")
    res = torchrun([s], timeout=300, env={'ORDER_LOG': str(tmp_path / 'o.log')})
    assert res.returncode == 0, res.stdout[-3000:]
    for c in _checks(res.stdout):
        assert c['backend'] == 'nccl' and c['weights_diff'] == 0 and c['grad_diff'] < 1e-5 * max(1, c['grad_max']), c
