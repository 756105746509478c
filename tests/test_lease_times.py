"""scripts/lease_times.py: one run's stage seconds out of a lease's concatenated logs."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from scripts import lease_times

ROOT = Path(__file__).resolve().parents[1]

# Two runs' logs as collect concatenates them. Run a's sampling bar redraws with \r (tqdm): its
# elapsed time is the 100 % frame's, 00:06 (6 s), not 0 % (00:00) or 50 % (00:03). Run b's bar ran
# past an hour: 1:02:03 = 3600 + 120 + 3 = 3723 s. b trains twice in its log (a retried stage):
# the later figure, 95.5, is what ran to the end.
LOG = (
    "Running stage 'train_baseline':\n"
    "baseline: steps took 93.0 s, GPU peak 1.2 GiB (0.41 s/step over 225 steps: fwd_bwd 0.40)\n"
    "Running stage 'generate@baseline':\n"
    "generate baseline:   0%|          | 0/1000 [00:00<?, ?sample/s]"
    "\rgenerate baseline:  50%|#####     | 500/1000 [00:03<00:03, 150.00sample/s]"
    "\rgenerate baseline: 100%|##########| 1000/1000 [00:06<00:00, 152.10sample/s]"
    "\rgenerate baseline: 100%|##########| 1000/1000 [00:06<00:00, 152.10sample/s, tok_s=3424]\n"
    "Ran experiment(s): gpu-s0\n"
    "gem: steps took 80.0 s, GPU peak 1.3 GiB\n"
    "gem: steps took 95.5 s, GPU peak 1.3 GiB\n"
    "generate gem: 100%|##########| 1640/1640 [1:02:03<00:00, 0.44sample/s]\n"
    "Ran experiment(s): gpu-s1\n"
)


def test_each_run_gets_its_own_stages_from_the_concatenated_log(tmp_path):
    log = tmp_path / "logs.gz"
    log.write_bytes(gzip.compress(LOG.encode()))
    lease_times.main([str(log), "--exp", "gpu-s0", "--out", str(tmp_path / "a.tsv")])
    lease_times.main([str(log), "--exp", "gpu-s1", "--out", str(tmp_path / "b.tsv")])
    assert (tmp_path / "a.tsv").read_text() == (
        "stage\tseconds\ntrain_baseline\t93.0\ngenerate@baseline\t6.0\n"
    )
    assert (
        tmp_path / "b.tsv"
    ).read_text() == "stage\tseconds\ntrain_gem\t95.5\ngenerate@gem\t3723.0\n"


def test_a_run_that_did_not_end_is_named_not_guessed(tmp_path):
    log = tmp_path / "t.log"  # a plain log works too
    log.write_text(LOG + "baseline: steps took 10.0 s\n")  # gpu-s2 started and never ended
    with pytest.raises(SystemExit, match=r"no run of gpu-s2 ended \(ran: \['gpu-s0', 'gpu-s1'\]\)"):
        lease_times.main([str(log), "--exp", "gpu-s2", "--out", str(tmp_path / "c.tsv")])
    assert not (tmp_path / "c.tsv").exists()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kept_qa_stage_times_come_from_the_kept_lease_log(seed, tmp_path):
    # RESULTS.md's qa compute columns read reports/qa_test/seed<k>/h200_stage_times.tsv: they
    # must be what the kept log of that lease says for that seed, not another seed's.
    folder = ROOT / "reports" / "qa_test"
    out = tmp_path / "t.tsv"
    lease_times.main([str(folder / "lease_logs.gz"), "--exp", f"gpu-s{seed}", "--out", str(out)])
    assert out.read_text() == (folder / f"seed{seed}" / "h200_stage_times.tsv").read_text()
