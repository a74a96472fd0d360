"""The checked-in stubs are exactly what the protos generate (regenerate with `make stubs`)."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GENERATED = ROOT / "client" / "reward_api"


def test_checked_in_stubs_match_the_protos(tmp_path):
    subprocess.run(
        [sys.executable, str(ROOT / "tools" / "generate_protos.py"), "--out", str(tmp_path)], check=True
    )
    fresh = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*_pb2*.py*"))
    checked_in = sorted(p.relative_to(ROOT / "client") for p in GENERATED.rglob("*_pb2*.py*"))
    assert fresh == checked_in, "stubs added or removed: run `make stubs`"
    drifted = [str(p) for p in fresh if not filecmp.cmp(tmp_path / p, ROOT / "client" / p, shallow=False)]
    assert not drifted, f"stubs differ from the protos: {drifted}; run `make stubs`"


def test_stubs_import_each_other_by_package_path():
    text = (GENERATED / "v1" / "reward_pb2_grpc.py").read_text()
    assert "from reward_api.v1 import reward_pb2" in text
