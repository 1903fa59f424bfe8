"""Offline validation of Registrar's deploy/ manifests; run by .ci/check-deploy in its venv.

Every document must have apiVersion, kind and a DNS-1123 metadata.name, and validate
strictly (unknown fields are errors, as with the API server's strict field validation)
against a schema, or the check fails — an object nobody can check is an error:

- Kubernetes' own kinds: kubernetes-validate's schemas, for each --k8s version.
- Tinkerbell's kinds (tinkerbell.org, bmc.tinkerbell.org): the upstream CRDs in --crds.
- Flux, Argo CD and Prometheus Operator kinds: the CRD schemas vendored in --schemas
  (.ci/schemas/README.md), metadata against Kubernetes' ObjectMeta.

Also: every PromQL expression (PrometheusRule rules, --grafana dashboard targets) parses;
a Template's spec.data is YAML; each --dockerfile parses with BuildKit's own parser and its
COPY sources exist.
"""

import argparse
import glob
import json
import os
import re
import sys

import dockerfile
import jsonschema
import kubernetes_validate
import promql_parser
import referencing
import yaml
from kubernetes_validate import utils as kv

DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
TINKERBELL_GROUPS = ("tinkerbell.org", "bmc.tinkerbell.org")

errors = []


def error(where, msg):
    errors.append(f"{where}: {msg}")


def strict(schema):
    """additionalProperties: false wherever properties are listed and unknown fields are not
    preserved: what the API server's strict field validation rejects."""
    if isinstance(schema, dict):
        if "properties" in schema and schema.get("x-kubernetes-preserve-unknown-fields") is not True:
            schema.setdefault("additionalProperties", False)
        for v in schema.values():
            strict(v)
    elif isinstance(schema, list):
        for v in schema:
            strict(v)
    return schema


def crd_schemas(crd_dir):
    """(apiVersion, kind) -> openAPIV3Schema, from CRD files."""
    out = {}
    for path in sorted(glob.glob(os.path.join(crd_dir, "**", "*.yaml"), recursive=True)):
        with open(path) as f:
            for crd in yaml.safe_load_all(f):
                if not crd or crd.get("kind") != "CustomResourceDefinition":
                    continue
                group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
                for v in crd["spec"]["versions"]:
                    out[(f"{group}/{v['name']}", kind)] = strict(v["schema"]["openAPIV3Schema"])
    return out


def vendored_schemas(schema_dir):
    out = {}
    for path in sorted(glob.glob(os.path.join(schema_dir, "*.json"))):
        with open(path) as f:
            doc = json.load(f)
        out[(doc["apiVersion"], doc["kind"])] = strict(doc["schema"])
    return out


def object_meta_validator(version):
    """A validator for metadata against Kubernetes' ObjectMeta (strict)."""
    defs = kv.schema_contents(f"kubernetes-json-schema/v{version}-local-strict/_definitions.json", version)
    registry = referencing.Resource.from_contents(defs) @ referencing.Registry()
    ref = {"$ref": defs["$id"] + "#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}
    return jsonschema.Draft202012Validator(ref, registry=registry)


def check_schema(where, doc, schema):
    # metadata is checked against ObjectMeta, as the API server does for custom resources.
    schema = dict(schema, properties=dict(schema.get("properties", {}), metadata={"type": "object"}))
    validator = jsonschema.Draft7Validator(schema)
    for e in sorted(validator.iter_errors(doc), key=lambda e: list(e.path)):
        error(where, f"{'.'.join(str(p) for p in e.path) or '(root)'}: {e.message}")


def check_promql(where, expr):
    try:
        promql_parser.parse(expr)
    except Exception as e:  # the parser raises ValueError with the reason
        error(where, f"PromQL does not parse: {e}: {expr!r}")


def grafana_exprs(node):
    if isinstance(node, dict):
        if isinstance(node.get("expr"), str):
            yield node["expr"]
        for v in node.values():
            yield from grafana_exprs(v)
    elif isinstance(node, list):
        for v in node:
            yield from grafana_exprs(v)


def check_grafana(path):
    with open(path) as f:
        dash = json.load(f)
    for key in ("uid", "title", "panels", "schemaVersion"):
        if key not in dash:
            error(path, f"not a Grafana dashboard: no {key}")
    exprs = list(grafana_exprs(dash))
    if not exprs:
        error(path, "no PromQL expressions")
    for expr in exprs:
        # Grafana's variables, as Grafana would interpolate them.
        concrete = (expr.replace("$__rate_interval", "5m").replace("$__interval", "1m")
                    .replace("$job", "registrar").replace("$instance", ".*"))
        check_promql(f"{path} panel expression", concrete)
    return len(exprs)


def check_dockerfile(path):
    context = os.path.dirname(path) or "."
    try:
        commands = dockerfile.parse_file(path)
    except dockerfile.GoParseError as e:
        error(path, f"does not parse: {e}")
        return
    if not any(c.cmd == "FROM" for c in commands):
        error(path, "no FROM")
    for c in commands:
        if c.cmd == "COPY" and not any(f.startswith("--from=") for f in c.flags):
            for src in c.value[:-1]:
                if not glob.glob(os.path.join(context, src)):
                    error(path, f"COPY source {src} does not exist in the build context {context}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--k8s", required=True, help="Kubernetes versions, comma-separated")
    ap.add_argument("--crds", required=True)
    ap.add_argument("--schemas", required=True)
    ap.add_argument("--grafana", action="append", default=[])
    ap.add_argument("--dockerfile", action="append", default=[])
    ap.add_argument("files", nargs="+")
    args = ap.parse_args()
    versions = args.k8s.split(",")

    tinkerbell = crd_schemas(args.crds)
    if not tinkerbell:
        sys.exit(f"no CRDs found in {args.crds}")
    vendored = vendored_schemas(args.schemas)
    meta = {v: object_meta_validator(v) for v in versions}
    counts = {}

    for path in args.files:
        with open(path) as f:
            try:
                docs = [d for d in yaml.safe_load_all(f) if d is not None]
            except yaml.YAMLError as e:
                error(path, f"not YAML: {e}")
                continue
        if not docs:
            error(path, "no objects")
        for doc in docs:
            api, kind = doc.get("apiVersion"), doc.get("kind")
            name = (doc.get("metadata") or {}).get("name")
            where = f"{path}: {kind}/{name}"
            if not isinstance(api, str) or not isinstance(kind, str):
                error(where, "apiVersion and kind are required")
                continue
            if not isinstance(name, str) or len(name) > 253 or not DNS1123_SUBDOMAIN.match(name):
                error(where, "metadata.name must be a DNS-1123 subdomain")
                continue
            group = api.split("/")[0] if "/" in api else ""
            if group in TINKERBELL_GROUPS:
                schema = tinkerbell.get((api, kind))
                if schema is None:
                    error(where, f"no Tinkerbell CRD for {api} {kind} in {args.crds}")
                    continue
                check_schema(where, doc, schema)
                for v, validator in meta.items():
                    for e in validator.iter_errors(doc["metadata"]):
                        error(where, f"metadata ({v}): {'.'.join(str(p) for p in e.path)}: {e.message}")
                if kind == "Template":
                    try:
                        yaml.safe_load(doc["spec"]["data"])
                    except yaml.YAMLError as e:
                        error(where, f"spec.data is not YAML: {e}")
                source = "Tinkerbell CRD"
            elif (api, kind) in vendored:
                check_schema(where, doc, vendored[(api, kind)])
                for v, validator in meta.items():
                    for e in validator.iter_errors(doc["metadata"]):
                        error(where, f"metadata ({v}): {'.'.join(str(p) for p in e.path)}: {e.message}")
                source = "vendored CRD schema"
            else:
                for v in versions:
                    try:
                        kubernetes_validate.validate(doc, v, strict=True)
                    except kv.ValidationError as e:
                        error(where, f"Kubernetes {v}: {'.'.join(str(p) for p in e.path)}: {e.message}")
                    except kv.SchemaNotFoundError as e:
                        error(where, f"no schema to validate against: {e.message} (vendor one in {args.schemas})")
                        break
                source = "Kubernetes " + "/".join(versions)
            if kind == "PrometheusRule":
                for g in doc.get("spec", {}).get("groups", []):
                    for rule in g.get("rules", []):
                        check_promql(f"{where} rule {rule.get('alert') or rule.get('record')}", str(rule.get("expr", "")))
            counts[source] = counts.get(source, 0) + 1

    n_exprs = sum(check_grafana(p) for p in args.grafana)
    for p in args.dockerfile:
        check_dockerfile(p)

    if errors:
        print("\n".join(f"ERROR {e}" for e in errors))
        sys.exit(1)
    summary = ", ".join(f"{n} against {s}" for s, n in sorted(counts.items()))
    print(f"ok: {sum(counts.values())} objects in {len(args.files)} files ({summary}); "
          f"{n_exprs} dashboard expressions; {len(args.dockerfile)} Dockerfiles")


if __name__ == "__main__":
    main()
