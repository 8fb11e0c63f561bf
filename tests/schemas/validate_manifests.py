"""Validates Kubernetes manifests against their schemas, strictly (an unknown field is an
error, as `kubectl apply` with server-side field validation refuses it).

    validate_manifests.py 1.30,1.37 FILE...

Built-in kinds: kubernetes-validate's schemas of each Kubernetes version, strict mode.
Custom resources (KEDA, the Prometheus Operator) and the Kustomization: the JSON schemas
beside this script (their openAPIV3Schema, each naming its source and version), made strict
the way the API server's pruning is: an object schema with `properties` accepts no other key
unless it says `additionalProperties` or `x-kubernetes-preserve-unknown-fields`.

Prints one line per document and version; exits 1 if any document failed.
"""

import json
import pathlib
import sys

import jsonschema
import kubernetes_validate
import yaml

HERE = pathlib.Path(__file__).parent


def strict(schema):
    """`schema` with unknown keys refused wherever its object schemas list their properties."""
    if isinstance(schema, dict):
        schema = {key: strict(value) for key, value in schema.items()}
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    return schema


def vendored_schemas():
    """(apiVersion, kind) -> validator, from the JSON files beside this script."""
    validators = {}
    for path in sorted(HERE.glob("*.json")):
        schema = json.loads(path.read_text())
        source = schema["x-pwrecovery-source"]
        schema = strict(schema)
        schema.setdefault("properties", {}).update(
            {
                "apiVersion": {"const": source["apiVersion"]},
                "kind": {"const": source["kind"]},
            }
        )
        # The CRDs' openAPIV3Schema leaves metadata to the API server; these fields of
        # ObjectMeta are all the manifests may set.
        if source["repository"] != "written here":
            schema["properties"]["metadata"] = {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "name": {"type": "string"},
                    "namespace": {"type": "string"},
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                    "annotations": {
                        "type": "object",
                        "additionalProperties": {"type": "string"},
                    },
                },
            }
        validators[(source["apiVersion"], source["kind"])] = jsonschema.Draft7Validator(schema)
    return validators


def main():
    versions = sys.argv[1].split(",")
    vendored = vendored_schemas()
    failed = 0
    for name in sys.argv[2:]:
        for doc in yaml.safe_load_all(open(name)):
            if doc is None:
                continue
            key = (doc.get("apiVersion"), doc.get("kind"))
            what = f"{name}: {key[1]} {doc.get('metadata', {}).get('name', '')}".rstrip()
            if key in vendored:
                errors = sorted(vendored[key].iter_errors(doc), key=lambda e: list(e.path))
                for error in errors:
                    path = ".".join(str(p) for p in error.path) or "(top)"
                    print(f"FAIL {what}: {path}: {error.message}")
                failed += bool(errors)
                if not errors:
                    print(f"ok   {what} (vendored schema)")
                continue
            for version in versions:
                try:
                    kubernetes_validate.validate(doc, version, strict=True)
                    print(f"ok   {what} (Kubernetes {version})")
                except kubernetes_validate.ValidationError as e:
                    path = ".".join(str(p) for p in e.path) or "(top)"
                    print(f"FAIL {what} (Kubernetes {version}): {path}: {e.message}")
                    failed += 1
                except kubernetes_validate.SchemaNotFoundError:
                    print(f"FAIL {what}: no schema for {key[0]} {key[1]} in Kubernetes {version}")
                    failed += 1
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
