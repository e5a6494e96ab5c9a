"""The benchmark clients: they ask for the answer's outputs only, as a client that wants no heatmap
does (the Grad-CAM map costs engine time, and OIP returns every output when a request names none);
the shared-memory client names its region instead of carrying the tensor."""

import json

import numpy as np

from benchmarks.loadgen import GrpcSharedMemoryTarget, GrpcTarget, RestTarget, answer_outputs
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


def test_a_shared_memory_request_carries_where_the_input_is_not_the_input():
    images = np.zeros((2, 4, 4, 3), np.float32)
    target = GrpcSharedMemoryTarget("127.0.0.1:1", "bloodcell", "image", images, outputs=["probabilities"])
    assert not target.request.raw_input_contents
    parameters = target.request.inputs[0].parameters
    assert parameters["shared_memory_region"].string_param == target.name
    assert parameters["shared_memory_byte_size"].int64_param == images.nbytes

