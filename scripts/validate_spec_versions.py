"""Validate bioimage.io packages with whatever `bioimageio.spec` is installed in the running Python.

The clients pin older spec versions than ours (ilastik: 0.5.9.1, the bioimage.io website runner: 0.5.10.2), and a
package that our spec accepts can fail theirs. This script imports nothing from cristae_zoo, so it runs in a small
side environment that holds only the client's spec version:

    python3.11 -m venv /tmp/spec0591 && /tmp/spec0591/bin/pip install "bioimageio.spec==0.5.9.1" "pydantic<2.12"
    /tmp/spec0591/bin/python scripts/validate_spec_versions.py model_zoo/*/rdf.yaml

One line per package (`PASS` or `FAIL` with the first error); exit code 1 if any fails. `pydantic<2.12`: pydantic
2.14 breaks the file serializer of spec 0.5.9.1-0.5.12 (see docs/clients.md).
"""

from __future__ import annotations

import sys
from pathlib import Path


def first_error(summary: object) -> str:
    """The first validation error as `loc: message` on one line."""
    errors = getattr(summary, "errors", None) or []
    if not errors:
        return "invalid (no error detail)"
    e = errors[0]
    loc = ".".join(str(p) for p in getattr(e, "loc", ()))
    msg = " ".join(str(getattr(e, "msg", e)).split())
    return f"{loc}: {msg}" if loc else msg


def validate(rdf: Path) -> tuple[bool, str]:
    """(passed, detail) for one rdf.yaml, validated with file hashes like the clients do on download."""
    from bioimageio.spec import InvalidDescr, load_description

    try:
        descr = load_description(rdf, perform_io_checks=True)
    except Exception as err:  # an rdf the installed spec cannot even read
        return False, f"{type(err).__name__}: {' '.join(str(err).split())[:300]}"
    if isinstance(descr, InvalidDescr):
        return False, first_error(descr.validation_summary)
    return True, f"format_version {descr.format_version}"


def main(argv: list[str]) -> int:
    import bioimageio.spec

    if not argv:
        print("usage: validate_spec_versions.py RDF.yaml [RDF.yaml ...]", file=sys.stderr)
        return 2
    failed = 0
    for arg in argv:
        ok, detail = validate(Path(arg))
        failed += not ok
        print(f"{'PASS' if ok else 'FAIL'} spec {bioimageio.spec.__version__} {arg}: {detail}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
