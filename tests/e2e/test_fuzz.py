"""Schemathesis against the OpenAPI document a real `bentoml serve` publishes (GET /docs.json).

Every operation of the document gets generated requests (valid and invalid bodies, odd content
types); the checks: no 5xx, every answer's status and body are the ones the document declares (the
error answers too: `{"error": ...}`), content types as declared. Schema-valid requests answered with
a 4xx are not failures here: a file that is schema-valid (any bytes) is not necessarily a decodable
image (415), and a schema-valid model name need not exist (404).

`make test` runs a bounded number of cases per operation (VISIONZOO_FUZZ_EXAMPLES, default 25:
about 250 cases); `make fuzz` runs the large campaign (2,000 per operation: over 10,000 cases; 1,500 gave 9,226).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("schemathesis")

pytestmark = [pytest.mark.e2e, pytest.mark.fuzz]

EXAMPLES = int(os.environ.get("VISIONZOO_FUZZ_EXAMPLES", "25"))
# Schema-valid bodies answered with a 4xx are not failures (see above), so positive_data_acceptance is
# left out; negative_data_rejection too: form values are read leniently (`true` for top_k is 1).
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
    "missing_required_header",
    "unsupported_method",
)


@pytest.fixture(scope="module")
def served_env() -> dict[str, str]:
    # small limits keep generated uploads cheap; no admin token: the admin routes answer 403 (documented)
    # rather than reloading models under the fuzzer
    return {"VISIONZOO_MAX_IMAGES": "8", "VISIONZOO_MAX_IMAGE_BYTES": str(1 << 20),
            "VISIONZOO_MAX_REQUEST_BYTES": str(4 << 20)}


def test_published_api_answers_as_documented(served, tmp_path):
    command = [str(Path(sys.executable).parent / "schemathesis"), "run", f"{served.url}/docs.json",
               "--checks", ",".join(CHECKS), "--max-examples", str(EXAMPLES), "--phases", "examples,coverage,fuzzing",
               "--workers", "2", "--request-timeout", "120", "--seed", "20261201", "--no-color",
               "--report", "junit", "--report-dir", str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=3600, cwd=tmp_path,
                          env={**os.environ, "SCHEMATHESIS_HOOKS": ""}, check=False)
    summary = done.stdout[-6000:]
    print(summary[-1500:])
    assert done.returncode == 0, f"schemathesis found problems:\n{summary}\n{done.stderr[-2000:]}"
    generated = re.search(r"(\d+) generated", done.stdout)
    assert generated and int(generated.group(1)) >= min(100, EXAMPLES), summary
    assert "No API operations" not in done.stdout, summary
    assert served.process.poll() is None, "the server died under the fuzzer"
