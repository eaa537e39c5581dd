"""Every op at the edges of its domain (0, -0, +-inf, nan, +-1e8, tiny and denormal values,
negative bases, exponent 0), forward and backward, against PyTorch, in float32 and
float64 on both nd-mode devices. The table is tests/op_edge_cases.py."""
import pytest

import needle as ndl
from op_edge_cases import CASES, DTYPES, run_case

# numpy warns of the infs and nans these inputs make on purpose
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


@pytest.mark.parametrize("device", [ndl.cpu(), ndl.cpu_numpy()], ids=["cpu", "cpu_numpy"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_op_edges(case, dtype, device):
    run_case(case, dtype, device)
