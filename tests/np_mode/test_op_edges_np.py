"""The edge sweep of tests/test_op_edges.py in numpy mode: every op of the shared table
(tests/op_edge_cases.py) against PyTorch, on numpy arrays through needle.backend_numpy."""
import os

import pytest

import needle as ndl
from op_edge_cases import CASES, DTYPES, run_case

assert os.environ.get("NEEDLE_BACKEND") == "np", "run this folder with NEEDLE_BACKEND=np"

# numpy warns of the infs and nans these inputs make on purpose
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_op_edges_np(case, dtype):
    run_case(case, dtype, ndl.cpu())
