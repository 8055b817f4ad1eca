"""Fault matrix: every fault mode of the local server, through the engine's job protocol AND the
GIMP 2.10 host, with the reaction asserted and "data lost = 0" checked after each. Run with ``-s`` to see the
table (``python -m tests.reliability.faults`` prints it too)."""

from __future__ import annotations

import pytest

from tests.reliability import faults as F

pytestmark = pytest.mark.slow

ROWS: list[F.Row] = []


@pytest.fixture(scope="module")
def servers():
    """One server per fault spec, shared by the job and host tests of that fault (reset between uses)."""
    from tests.support.local_server import LocalServerHandle

    started: dict[str, LocalServerHandle] = {}

    def get(spec: str) -> LocalServerHandle:
        if spec not in started:
            for old in list(started):  # keep at most one alive: the machine is shared
                started.pop(old).stop()
            started[spec] = LocalServerHandle(("--fault", spec))
        return started[spec]

    yield get
    for handle in started.values():
        handle.stop()


@pytest.mark.parametrize("case", F.CASES, ids=[c.name for c in F.CASES])
def test_fault_through_the_job_protocol(case, servers, tmp_path):
    row = F.run_engine_case(case, servers(case.spec), tmp_path)
    assert row.lost == 0
    ROWS.append(row)


@pytest.mark.parametrize("case", F.CASES, ids=[c.name for c in F.CASES])
def test_fault_through_the_gimp2_host(case, servers):
    row = F.run_host_case(case, servers(case.spec))
    assert row.lost == 0
    ROWS.append(row)


def test_batch_of_8_with_2_refused_finishes_the_other_6(servers, tmp_path):
    server = servers("moderation_blocked;times=2")
    ROWS.append(F.run_engine_batch(server, tmp_path))
    ROWS.append(F.run_host_batch(server))


def test_print_fault_table():
    """The table (``pytest -s``). Needs the matrix above in the same run; alone it says so."""
    if not ROWS:
        pytest.skip("run the whole module to collect the table")
    rows = sorted(ROWS, key=lambda r: (r.path != "job", [c.name for c in F.CASES].index(r.case)
                                       if r.case in [c.name for c in F.CASES] else 99))
    print("\n" + F.table(rows))
    assert all(r.lost == 0 for r in rows)
