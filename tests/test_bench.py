"Every benchmark script still runs: each `bench/*.py` in its `--quick` mode (one small case, nothing written to the repository)."
import os, subprocess, sys, pytest
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / 'bench'
SCRIPTS = sorted(p.name for p in BENCH.glob('*.py') if not p.name.startswith('_'))

def test_every_script_is_listed():
    assert {'bf16.py', 'ddp.py', 'demo.py', 'loss.py', 'postprocess.py', 'predict.py', 'results.py', 'ssd300.py', 'train_speed.py', 'vgg_scratch.py'} <= set(SCRIPTS)

@pytest.mark.parametrize('script', SCRIPTS)
def test_bench_script_runs_quick(script, tmp_path):
    "On the device at hand (CUDA where present); the scripts import the package as a user's script would."
    before = sorted(p.name for p in BENCH.iterdir())
    env = {**os.environ, 'CUDA_VISIBLE_DEVICES': os.environ.get('CUDA_VISIBLE_DEVICES', '')} if script == 'ddp.py' else dict(os.environ)   # ddp: gloo on the CPU
    r = subprocess.run([sys.executable, str(BENCH / script), '--quick'], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert r.returncode == 0, f'{script} --quick failed:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}'
    assert sorted(p.name for p in BENCH.iterdir()) == before   # no table overwritten or added
