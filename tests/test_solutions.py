"The worked solutions in nbs/solutions/ run top to bottom under nbdev's tester, as the lessons do (cells flagged `slow` or `cuda` skipped)."
from pathlib import Path
import pytest
from nbdev.test import test_nb as run_nb

SOLS = sorted((Path(__file__).parent.parent / 'nbs' / 'solutions').glob('*.ipynb'))

def test_there_are_solutions(): assert len(SOLS) >= 10, SOLS

@pytest.mark.parametrize('nb', SOLS, ids=[p.name for p in SOLS])
def test_solution(nb):
    ok, secs = run_nb(nb, skip_flags=['slow', 'cuda'])
    assert ok, f'solutions/{nb.name} failed (see the traceback above)'
