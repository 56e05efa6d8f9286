"""perftest's side of a rank pair (no RDMA device needed): a client dials again until its server
listens, and perftest's result lines are read by their columns."""

import pytest

from metrolab.harness.rdma.perftest import NoResult, main, parse

pytestmark = pytest.mark.unit


def test_a_client_dials_again_until_its_server_listens(tmp_path, capsys):
    # a stand-in for ib_write_bw's client: refused twice ("Couldn't connect", exit 1), then its result
    tries = tmp_path / "tries"
    client = (f"echo x >> {tries}; if [ $(wc -l < {tries}) -lt 3 ]; then echo \"Couldn't connect to 10.1.0.1:18515\"; "
              "exit 1; fi; echo ' 65536 1000 0.20 0.19 0.000366'")
    assert main(["sh", "-c", client]) == 0
    assert tries.read_text().count("x") == 3
    assert parse("ib_write_bw", capsys.readouterr().out)["bw_avg_gbps"] == 0.19
    # any other failure is the tool's own: told at once, not dialled again
    assert main(["sh", "-c", f"echo y >> {tries}; echo 'ibv_open_device failed' >&2; exit 2"]) == 2
    assert tries.read_text().count("y") == 1 and "ibv_open_device failed" in capsys.readouterr().out


def test_results_are_read_by_their_columns():
    lat = parse("ib_write_lat", " 2       1000          4.12           30.01        5.02    "
                                "   5.40        1.10            9.80                30.01   ")
    assert lat["t_typical_us"] == 5.02 and lat["p999_us"] == 30.01
    with pytest.raises(NoResult):
        parse("ib_write_bw", "---\n #bytes     #iterations    BW peak[Gb/sec]\n")
