"""The operator dashboard and the alert rules only use metric names that the
services really export (names are collected from the Rust sources), so a
renamed metric fails here instead of showing an empty panel."""

import json
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[2]
SUFFIXES = ("_bucket", "_count", "_sum")


def exported():
    names = set()
    for path in list((ROOT / "services").rglob("*.rs")) + list((ROOT / "crates").rglob("*.rs")):
        names.update(re.findall(r'"(joinery_[a-z_]+)"', path.read_text()))
    return names


def used(text):
    found = set()
    for name in re.findall(r"\bjoinery_[a-z_]+\b", text):
        for s in SUFFIXES:
            if name.endswith(s):
                name = name[: -len(s)]
        found.add(name)
    return found


def test_dashboard_queries_use_exported_metrics():
    dash = json.loads((ROOT / "deploy" / "grafana" / "joinery-operations.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    assert len(exprs) >= 12
    missing = used("\n".join(exprs)) - exported()
    assert not missing, f"dashboard uses metrics no service exports: {sorted(missing)}"
    assert len({p["id"] for p in dash["panels"]}) == len(dash["panels"])


def test_alert_rules_use_exported_metrics():
    rules = (ROOT / "deploy" / "prometheus" / "rules.yml").read_text()
    missing = used(rules) - exported()
    assert not missing, f"alert rules use metrics no service exports: {sorted(missing)}"
