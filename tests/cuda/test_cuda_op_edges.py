"""The edge sweep (tests/op_edge_cases.py) on cuda: every op, forward and backward, at the
edges of its domain (0, -0, +-inf, nan, huge and tiny values), against PyTorch."""
import sys
from pathlib import Path

import pytest

import needle as ndl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, where the shared table lives
from op_edge_cases import CASES, DTYPES, run_case  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_op_edges_on_cuda(case, dtype):
    run_case(case, dtype, ndl.cuda())
