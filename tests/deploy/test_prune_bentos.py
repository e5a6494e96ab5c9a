"""deploy/prune_bentos.py: the local Bento store keeps the newest Bentos of a name after an image build."""

import subprocess
import sys
from pathlib import Path

from deploy.prune_bentos import stale_bentos

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "prune_bentos.py"
LISTING = [  # `bentoml list visionzoo -o json`, in the store's own (not time) order
    {"tag": "visionzoo:b", "creation_time": "2026-12-07 05:18:46"},
    {"tag": "visionzoo:d", "creation_time": "2026-12-07 08:09:58"},
    {"tag": "visionzoo:a", "creation_time": "2026-12-06 23:20:10"},
    {"tag": "visionzoo:c", "creation_time": "2026-12-07 07:00:00"},
]


def test_the_oldest_go_and_the_current_one_stays():
    assert stale_bentos(LISTING, "visionzoo:d", keep=2) == ["visionzoo:b", "visionzoo:a"]
    assert stale_bentos(LISTING, "visionzoo:d", keep=3) == ["visionzoo:a"]
    assert stale_bentos(LISTING, "visionzoo:d", keep=10) == []
    # the one just built is kept even when it is not the newest (its clock was behind), and keep < 1 means 1
    assert stale_bentos(LISTING, "visionzoo:a", keep=1) == ["visionzoo:c", "visionzoo:b"]
    assert stale_bentos(LISTING, "visionzoo:d", keep=0) == ["visionzoo:c", "visionzoo:b", "visionzoo:a"]


def test_the_command_deletes_through_bentoml_and_reports_what_it_could_not(tmp_path):
    calls = tmp_path / "calls.txt"
    fake = tmp_path / "bentoml"
    fake.write_text(f"""#!{sys.executable}
import json, sys
open({str(calls)!r}, "a").write(" ".join(sys.argv[1:]) + "\\n")
if sys.argv[1] == "list":
    print(json.dumps({LISTING!r}))
elif sys.argv[-1] == "visionzoo:a":
    sys.exit("Error: visionzoo:a is locked")
""")
    fake.chmod(0o755)
    done = subprocess.run([sys.executable, str(SCRIPT), "visionzoo:d", "--keep", "2", "--bentoml", str(fake)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert calls.read_text().splitlines() == ["list visionzoo -o json", "delete -y visionzoo:b", "delete -y visionzoo:a"]
    assert "could not delete visionzoo:a: Error: visionzoo:a is locked" in done.stderr
    assert "deleted 1 older Bento(s) of visionzoo, kept the newest 2: visionzoo:b" in done.stderr

    failing = tmp_path / "failing"
    failing.write_text(f"#!{sys.executable}\nimport sys\nsys.exit('no store')\n")
    failing.chmod(0o755)
    done = subprocess.run([sys.executable, str(SCRIPT), "visionzoo:d", "--bentoml", str(failing)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0 and "could not list the Bentos named visionzoo: no store" in done.stderr
