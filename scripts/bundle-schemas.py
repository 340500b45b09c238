#!/usr/bin/env python3
"""Keeps the JSON Schemas in schemas/ standalone and in one layout.

batch.schema.json embeds manifest.schema.json (its VM entries' overrides and its shared_config
are manifest keys), and batch-report.schema.json embeds report.schema.json (each VM's line holds
that VM's report). Each embeds the other file whole, as `$defs.manifest` / `$defs.report`, with
its `$id`, which is how JSON Schema 2020-12 bundles one schema into another: a `$ref` to
`manifest.schema.json#/...` then resolves inside the file, with no second file to fetch.

Run it after editing manifest.schema.json or report.schema.json:

    python3 scripts/bundle-schemas.py

It copies the embedded schemas again and rewrites the four files in one layout (2-space indent,
a value on one line when it fits in 100 columns), so a diff shows only what changed. The unit
test `schemas::tests::embedded_copies_are_the_files` fails while a copy is stale.
events.schema.json is left as it is.
"""

import json
import pathlib
import sys

SCHEMAS = pathlib.Path(__file__).resolve().parent.parent / "schemas"
WIDTH = 100
BUNDLES = [
    ("batch.schema.json", "manifest", "manifest.schema.json"),
    ("batch-report.schema.json", "report", "report.schema.json"),
]
FORMATTED = ["manifest.schema.json", "report.schema.json", "batch.schema.json", "batch-report.schema.json"]


def layout(value, indent=0, lead=0):
    """JSON text: on one line when it fits in WIDTH columns (after `lead` columns of key), else
    one member per line, indented by two more than `indent`."""
    flat = json.dumps(value, ensure_ascii=False)
    if indent + lead + len(flat) <= WIDTH or not isinstance(value, (dict, list)) or not value:
        return flat
    pad = " " * (indent + 2)
    if isinstance(value, dict):
        items = []
        for k, v in value.items():
            key = json.dumps(k, ensure_ascii=False) + ": "
            items.append(pad + key + layout(v, indent + 2, len(key)))
        return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"
    items = [pad + layout(v, indent + 2) for v in value]
    return "[\n" + ",\n".join(items) + "\n" + " " * indent + "]"


def main():
    docs = {name: json.loads((SCHEMAS / name).read_text()) for name in FORMATTED}
    for outer, key, inner in BUNDLES:
        docs[outer].setdefault("$defs", {})[key] = docs[inner]
    for name in FORMATTED:
        text = layout(docs[name]) + "\n"
        path = SCHEMAS / name
        if path.read_text() != text:
            path.write_text(text)
            print(f"bundle-schemas: wrote {path.relative_to(SCHEMAS.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
