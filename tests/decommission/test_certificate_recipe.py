"""The independent verification documented in docs/certificate.md works: its recipe, run as
the documentation says (a separate Python process, the `cryptography` package and lxml, none of
the gateway's code), verifies both forms of a certificate signed by the gateway's signing code
with a P-384 key and the JWKS the gateway publishes — one with non-ASCII text, an override and
a final notice — and rejects a changed certificate or another key."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from joserfc.jwk import ECKey

from adapter.decommission.certificate import public_jwks, signed_json, signed_xml
from tests.conftest import REPO
from tests.decommission.test_units import _certificate


def recipe(tmp_path: Path) -> Path:
    """Write the documentation's Python recipe to a file; return its path."""
    text = (REPO / "docs" / "certificate.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) == 1, "docs/certificate.md has one Python recipe"
    path = tmp_path / "verify_certificate.py"
    path.write_text(blocks[0])
    return path


def run(script: Path, certificate: Path, jwks: Path) -> subprocess.CompletedProcess[str]:
    """Run the recipe as documented, in a separate process started in an empty folder."""
    return subprocess.run([sys.executable, "-I", str(script), str(certificate), str(jwks)],
                          capture_output=True, text=True, timeout=60, cwd=script.parent,
                          check=False)


def key() -> ECKey:
    """Return a fresh P-384 signing key with its thumbprint as kid."""
    made = ECKey.generate_key("P-384", parameters={"alg": "ES384"})
    made.ensure_kid()
    return made


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """A signed certificate in both forms, the published JWKS and another key's JWKS."""
    content = _certificate()
    content["acknowledgements"][0]["clientName"] = "Système d'éducation — Haringey"
    signer = key()
    paths = {"json": tmp_path / "certificate.json", "xml": tmp_path / "certificate.xml",
             "jwks": tmp_path / "jwks.json", "other": tmp_path / "other.json"}
    paths["json"].write_bytes(orjson.dumps(signed_json(content, signer),
                                           option=orjson.OPT_INDENT_2))
    paths["xml"].write_bytes(signed_xml(content, signer))
    paths["jwks"].write_bytes(orjson.dumps(public_jwks(signer)))
    paths["other"].write_bytes(orjson.dumps(public_jwks(key())))
    return paths


@pytest.mark.parametrize("form", ["json", "xml"])
def test_the_documented_recipe_verifies_a_certificate(tmp_path: Path, files: dict[str, Path],
                                                      form: str) -> None:
    """Exit 0 with the published key; exit 1 with another key."""
    script = recipe(tmp_path)
    good = run(script, files[form], files["jwks"])
    assert good.returncode == 0 and "the signature verifies" in good.stdout, good.stderr
    other = run(script, files[form], files["other"])
    assert other.returncode == 1 and "does NOT verify" in other.stderr


@pytest.mark.parametrize("form", ["json", "xml"])
def test_the_documented_recipe_rejects_a_changed_certificate(tmp_path: Path,
                                                             files: dict[str, Path],
                                                             form: str) -> None:
    """One changed count (5 rows of child before destruction become 4) breaks it."""
    data = files[form].read_bytes()
    changed = data.replace(b'"before": 5', b'"before": 4') if form == "json" \
        else data.replace(b'before="5"', b'before="4"')
    assert changed != data
    forged = tmp_path / f"forged.{form}"
    forged.write_bytes(changed)
    result = run(recipe(tmp_path), forged, files["jwks"])
    assert result.returncode == 1 and "does NOT verify" in result.stderr
