"""The OpenAPI document (/docs.json) and the Swagger UI (/docs, and BentoML's own at /), in-process:
title and version, a description and a real example for every request field, the OIP REST routes,
descriptions on the response fields."""

from __future__ import annotations

import json

import pytest
from starlette.testclient import TestClient

import visionzoo
from visionzoo.serving import schemas as response_schemas
from visionzoo.serving.service import VisionZoo

from .conftest import fresh_asgi

PLACEHOLDERS = ("", "string", None, [], {}, ["string"])
ENDPOINT_INPUTS = ("BloodcellPredictInput", "MuraPredictInput", "MuraPredictStudyInput", "MarsSegmentInput")


@pytest.fixture(scope="module")
def document() -> dict:
    return json.loads(json.dumps(VisionZoo.openapi_spec.asdict()))  # what /docs.json serves


@pytest.fixture(scope="module")
def client():
    with TestClient(fresh_asgi(VisionZoo)) as test_client:
        yield test_client


def test_title_and_version(document):
    info = document["info"]
    assert info["title"] == "visionzoo"
    assert info["version"] == visionzoo.__version__ and info["version"] not in ("None", "")
    assert "visionzoo:dev" not in info.get("description", "") and "/v2" in info["description"]


def request_schemas(document) -> dict[str, dict]:
    """The request body schema of every POST route the service itself defines (not the OIP ones)."""
    found = {}
    for route, item in document["paths"].items():
        operation = item.get("post")
        if not operation or route.startswith("/v2"):
            continue
        for media in operation.get("requestBody", {}).get("content", {}).values():
            schema = media["schema"]
            reference = schema.get("$ref", "")
            found[route] = document["components"]["schemas"][reference.rsplit("/", 1)[-1]] if reference else schema
    return found


def test_every_request_field_has_a_description_and_a_real_example(document):
    found = request_schemas(document)
    schemas = document["components"]["schemas"]
    assert set(ENDPOINT_INPUTS) <= set(schemas)
    found.update({title: schemas[title] for title in (*ENDPOINT_INPUTS, "admin_reload__Input", "admin_rollback__Input")})
    assert {"/bloodcell/predict", "/mura/predict", "/mura/predict_study", "/mars/segment", "/admin/reload"} <= set(found)
    checked = 0
    for route, schema in found.items():
        for field, prop in schema.get("properties", {}).items():
            assert prop.get("description", "").strip(), f"{route} {field}: no description"
            assert "example" in prop and prop["example"] not in PLACEHOLDERS, f"{route} {field}: no real example"
            checked += 1
    assert checked >= 9


def test_images_examples_are_file_names_of_each_model(document):
    schemas = document["components"]["schemas"]
    for title in ENDPOINT_INPUTS:
        (example,) = schemas[title]["properties"]["images"]["example"]
        assert example.rsplit(".", 1)[-1].lower() in ("jpg", "jpeg", "png", "tif", "tiff", "npy"), (title, example)
    assert schemas["BloodcellPredictInput"]["properties"]["images"]["example"] != \
        schemas["MarsSegmentInput"]["properties"]["images"]["example"]


def test_option_examples_are_valid_values(document):
    properties = document["components"]["schemas"]["MarsSegmentInput"]["properties"]
    assert properties["mask_format"]["example"] in properties["mask_format"]["enum"]
    assert isinstance(properties["overlay"]["example"], bool)
    assert 0 <= properties["overlay_opacity"]["example"] <= 1
    assert 1 <= document["components"]["schemas"]["BloodcellPredictInput"]["properties"]["top_k"]["example"] <= 8


def test_oip_routes_are_documented(document, client):
    """The OIP REST routes: linked from /docs.json (tag, description) and listed in GET /docs/oip.json;
    their request body schema is in both. They stay out of /docs.json's paths (the fuzzer's target)."""
    tags = {tag["name"]: tag for tag in document["tags"]}
    assert tags["Open Inference Protocol"]["externalDocs"]["url"] == "./docs/oip.json"
    assert "/docs/oip.json" in document["info"]["description"] and "/v2/models/{model}" in document["info"]["description"]
    assert "OipInferRequest" in document["components"]["schemas"]
    assert not any(route.startswith("/v2") for route in document["paths"])
    answer = client.get("/docs/oip.json")
    assert answer.status_code == 200
    oip = answer.json()
    assert oip["info"]["version"] == visionzoo.__version__ and oip["externalDocs"]["url"].startswith("https://")
    paths = oip["paths"]
    for route, method in (("/v2", "get"), ("/v2/health/ready", "get"), ("/v2/models/{model}", "get"),
                          ("/v2/models/{model}/config", "get"), ("/v2/models/{model}/stats", "get"),
                          ("/v2/models/{model}/infer", "post"), ("/v2/models/{model}/versions/{version}/infer", "post"),
                          ("/v2/repository/index", "post"), ("/v2/repository/models/{model}/unload", "post"),
                          ("/v2/systemsharedmemory/status", "get"), ("/v2/systemsharedmemory/region/{region}/register", "post")):
        operation = paths[route][method]
        assert operation["tags"] == ["Open Inference Protocol"] and operation["summary"], route
        for parameter in operation.get("parameters", []):
            assert parameter["description"] and parameter["schema"]["example"], (route, parameter)
    body = paths["/v2/models/{model}/infer"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    infer = oip["components"]["schemas"][body["$ref"].rsplit("/", 1)[-1]]
    assert infer["required"] == ["inputs"] and "image_bytes" in infer["description"]
    tensor = infer["properties"]["inputs"]["items"]["properties"]
    assert all(prop["description"] and "example" in prop for prop in tensor.values())
    assert "ErrorBody" in oip["components"]["schemas"]


def test_response_fields_are_described(document):
    schemas = document["components"]["schemas"]
    ours = {name for name in vars(response_schemas) if isinstance(getattr(response_schemas, name), type)}
    checked = 0
    for title, schema in schemas.items():
        if title not in ours:
            continue
        for field, prop in schema.get("properties", {}).items():
            if "$ref" in prop or title.endswith("Response") and field == "model":
                continue
            assert prop.get("description"), f"{title}.{field}: no description"
            checked += 1
    assert checked >= 20


def test_docs_serves_the_swagger_ui(client):
    for path in ("/docs", "/"):
        page = client.get(path)
        assert page.status_code == 200, path
        assert page.headers["content-type"].startswith("text/html") and "swagger" in page.text.lower(), path
    served = client.get("/docs.json")
    assert served.status_code == 200
    spec = served.json()
    assert spec["info"]["title"] == "visionzoo" and "/bloodcell/predict" in spec["paths"]
