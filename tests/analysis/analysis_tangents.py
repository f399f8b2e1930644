"""The Python reference of the tangent generator (analysis/spry_analysis/tangents.py) against the C code.

Checks (all BITWISE, tolerance 0: the reference repeats the C arithmetic in the same order and precision):
1. Philox4x32-10 known answers (Random123's, the ones tests/unit/test_rng.c checks).
2. Every slot's estimate rebuilt from /slots/scalars and the tangent keys equals the /slots/estimate the C code
   logged (log.gradients = dense), for per-iteration runs of: Spry (Gaussian, K = 4), Spry with Rademacher
   tangents, BAFFLE (zeroth order, loss differences as scalars, K = 20), FwdLLM (selected stream indices
   /slots/k_index, per-step K /slots/step_K).
3. A `scalars`-level file of the same configuration (no dense data) rebuilds the same estimates as the dense file
   logged, so scalars-level files serve the variance experiments.

usage: analysis_tangents.py SPRY
"""
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import alib  # noqa: E402
from spry_analysis import tangents  # noqa: E402
from spry_analysis.runfile import RunFile  # noqa: E402

KAT = [((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
       ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
       ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1))]


def main():
    spry = sys.argv[1]
    for ctr, key, want in KAT:
        got = tangents.philox4x32_10(np.array([ctr[0]]), ctr[1], ctr[2], ctr[3], key[0], key[1])
        got = tuple(int(w[0]) for w in got)
        assert got == want, "philox KAT %s %s: got %s want %s" % (ctr, key, [hex(x) for x in got], [hex(x) for x in want])
    cases = {
        "spry-gaussian": ["method.K=4", "fl.clients_per_round=5"] + alib.ITER,
        "spry-rademacher": ["method.K=4", "method.tangent=rademacher", "fl.clients_per_round=5"] + alib.ITER,
        "baffle": ["method.preset=baffle", "fl.clients_per_round=3"],
        "fwdllm": ["method.preset=fwdllm", "fl.clients_per_round=3", "method.fwdllm_max_K=8"],
    }
    total = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name, settings in cases.items():
            dense = os.path.join(tmp, name + ".h5")
            alib.spry(spry, dense, "run.rounds=4", "run.eval_every=0", "log.gradients=dense", *settings)
            scal = os.path.join(tmp, name + "-scalars.h5")
            alib.spry(spry, scal, "run.rounds=4", "run.eval_every=0", "log.gradients=scalars", *settings)
            with RunFile(dense) as rf, RunFile(scal) as rs:
                est = rf.read("/slots/estimate")
                assert not rs.has("/slots/estimate"), "a scalars-level file with dense estimates"
                for t in range(rf.rounds_done):
                    g = tangents.client_estimates(rf, t)
                    bad = np.nonzero((g.view(np.uint32) != est[t].view(np.uint32)).any(axis=1))[0]
                    assert bad.size == 0, "%s round %d slots %s: rebuilt != logged (max |diff| %g)" % (
                        name, t, bad, np.abs(g - est[t]).max())
                    gs = tangents.client_estimates(rs, t)
                    assert gs.tobytes() == est[t].tobytes(), "%s round %d: the scalars-level file rebuilds other " \
                                                             "estimates" % (name, t)
                    total += est.shape[1]
            print("%s: %d rounds x %d slots rebuilt bitwise" % (name, rf.rounds_done, est.shape[1]), flush=True)
    print("analysis_tangents: %d client estimates rebuilt bit for bit from scalars and keys" % total)


if __name__ == "__main__":
    main()
