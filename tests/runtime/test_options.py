"""The CLI's shared option types agree with the runtime they select from."""

from cryoshift.runtime.backends import BACKENDS
from cryoshift.runtime.commands import bench, classify
from cryoshift.runtime.commands._options import Backend


def test_backend_option_lists_every_runtime_backend() -> None:
    assert tuple(b.value for b in Backend) == BACKENDS


def test_classify_and_bench_share_one_backend_option() -> None:
    assert classify.Backend is bench.Backend is Backend
