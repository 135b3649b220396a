"Every notebook in nbs/ runs top to bottom under nbdev's tester (cells flagged `slow` or `cuda` skipped)."
from pathlib import Path
import pytest
from nbdev.test import test_nb as run_nb

NBS = sorted((Path(__file__).parent.parent / 'nbs').glob('*.ipynb'))

@pytest.mark.parametrize('nb', NBS, ids=[p.name for p in NBS])
def test_notebook(nb):
    ok, secs = run_nb(nb, skip_flags=['slow', 'cuda'])
    assert ok, f'{nb.name} failed (see the traceback above)'
