"""The dashboard's TypeScript types are the OpenAPI document's, generated, never hand-written."""

from __future__ import annotations

from edgemon_server.openapi import document
from tests.conftest import REPO, load_script


def test_the_dashboard_types_are_generated_from_the_openapi_document():
    gen = load_script("gen_api_types")
    written = (REPO / "frontend" / "src" / "api-types.ts").read_text(encoding="utf-8")
    assert written == gen.render(document()), "out of date: run `python scripts/gen_api_types.py`"
    assert "export type DeviceSummary" in written
    assert "export type ListMetricsResponse" in written


def test_no_response_type_is_written_by_hand_in_the_dashboard():
    for path in (REPO / "frontend" / "src").glob("*.ts*"):
        if path.name == "api-types.ts":
            continue
        text = path.read_text(encoding="utf-8")
        for name in ("interface DeviceSummary", "interface DeviceDetail", "interface SeriesData", "interface Headline"):
            assert name not in text, f"{path.name} declares {name}: import it from api-types.ts"
