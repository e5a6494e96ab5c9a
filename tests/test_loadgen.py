"""The benchmark clients ask for the answer's outputs only, as a client that wants no heatmap does:
the Grad-CAM map costs engine time, and OIP returns every output when a request names none."""

import json

import numpy as np

from benchmarks.loadgen import GrpcTarget, RestTarget, answer_outputs
from benchmarks.paths import served_export
from benchmarks.service_bench import requested_outputs


def test_answer_outputs_leave_out_the_map():
    metadata = {"outputs": [{"name": "probabilities"}, {"name": "cam"}]}
    assert answer_outputs(metadata) == ["probabilities"]
    assert requested_outputs("bloodcell", "bloodcell_mobilenetv3") == ["probabilities"]
    assert requested_outputs("mura", served_export("mura")) == ["abnormal", "body_part"]


def test_requests_name_the_outputs_they_want():
    images = np.zeros((2, 4, 4, 3), np.float32)
    rest = RestTarget("http://x", "bloodcell", "image", images, outputs=["probabilities"])
    header = json.loads(rest.body[: int(rest.headers["Inference-Header-Content-Length"])])
    assert [o["name"] for o in header["outputs"]] == ["probabilities"]
    assert len(rest.body) - len(json.dumps(header)) == images.nbytes
    grpc = GrpcTarget("127.0.0.1:1", "bloodcell", "image", images, outputs=["probabilities"])
    assert [o.name for o in grpc.request.outputs] == ["probabilities"]
    assert not GrpcTarget("127.0.0.1:1", "bloodcell", "image", images).request.outputs  # none named: every output
