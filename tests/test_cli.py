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
