"""The services' OpenAPI documents are valid OpenAPI 3.1 and describe the
routes the services serve."""

import json
import pathlib

from openapi_spec_validator import validate

ROOT = pathlib.Path(__file__).resolve().parents[2]


def load(service):
    return json.loads((ROOT / "services" / service / "api" / "openapi.json").read_text())


def test_ingest_openapi_is_valid_and_describes_publishing():
    doc = load("ingest")
    validate(doc)
    post = doc["paths"]["/v1/events"]["post"]
    assert {"202", "400", "401", "403", "413", "415", "503"} <= set(post["responses"])
    assert "Retry-After" in post["responses"]["503"]["headers"]


def test_projections_openapi_is_valid_and_describes_metrics():
    doc = load("projections")
    validate(doc)
    get = doc["paths"]["/v1/missions/{mission}/metrics"]["get"]
    group_by = next(p for p in get["parameters"] if p["name"] == "group_by")
    assert group_by["schema"]["enum"] == ["area", "cohort_month"]
    assert {"200", "400", "401", "403", "404"} <= set(get["responses"])
