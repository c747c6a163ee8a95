"""Generate the dashboard's TypeScript types from the API's OpenAPI document.

    python scripts/gen_api_types.py          # writes frontend/src/api-types.ts

The document (``edgemon_server.openapi``) is the one description of the API's responses; the
dashboard imports these types instead of writing them by hand, and a test fails when the file is
out of date.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parents[1] / "frontend" / "src" / "api-types.ts"
PRIMITIVES = {"string": "string", "number": "number", "integer": "number", "boolean": "boolean", "null": "null"}


def ts_type(schema: dict[str, Any], indent: str = "") -> str:
    """The TypeScript type of a JSON Schema (the subset the document uses)."""
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[1]
    if "const" in schema:
        return json.dumps(schema["const"])
    if "enum" in schema:
        return " | ".join(json.dumps(v, ensure_ascii=False) for v in schema["enum"])
    kinds = schema.get("type", "object")
    if isinstance(kinds, list):
        return " | ".join(ts_type({**schema, "type": k}, indent) for k in kinds)
    if kinds in PRIMITIVES:
        return PRIMITIVES[kinds]
    if kinds == "array":
        item = ts_type(schema.get("items", {}), indent)
        return f"({item})[]" if "|" in item else f"{item}[]"
    props = schema.get("properties")
    if not props:
        extra = schema.get("additionalProperties")
        return f"Record<string, {ts_type(extra, indent)}>" if isinstance(extra, dict) else "Record<string, unknown>"
    required = set(schema.get("required", []))
    inner = indent + "  "
    lines = []
    for name, prop in props.items():
        if prop.get("description"):
            lines.append(f"{inner}/** {prop['description']} */")
        key = name if name.isidentifier() else json.dumps(name)
        lines.append(f"{inner}{key}{'' if name in required else '?'}: {ts_type(prop, inner)};")
    return "{\n" + "\n".join(lines) + f"\n{indent}}}"


def render(doc: dict[str, Any]) -> str:
    """The whole file."""
    out = [
        "// Generated from the API's OpenAPI document by scripts/gen_api_types.py: do not edit.",
        "// A test fails when this file and the document disagree.",
        "",
    ]
    for name, schema in doc["components"]["schemas"].items():
        out.append(f"export type {name} = {ts_type(schema)};")
        out.append("")
    for path, item in doc["paths"].items():
        operation = item["get"]
        content = operation["responses"]["200"].get("content")
        if not content or "application/json" not in content:
            continue  # /metrics: text for Prometheus, not for the dashboard
        name = operation["operationId"][0].upper() + operation["operationId"][1:] + "Response"
        out.append(f"/** GET {path} */")
        out.append(f"export type {name} = {ts_type(content['application/json']['schema'])};")
        out.append("")
    return "\n".join(out)


def main() -> int:
    from edgemon_server.openapi import document

    text = render(document())
    if "--check" in sys.argv:
        return 0 if OUT.exists() and OUT.read_text(encoding="utf-8") == text else 1
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
