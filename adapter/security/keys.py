"""The service's own signing key (access tokens now; certificates later), kept under the
instance folder with owner-only permissions and created once, race-free across workers."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import orjson
from joserfc.jwk import ECKey

SERVICE_KEY_ALG = "ES384"


def _write_exclusive(path: Path, data: bytes) -> bool:
    """Write ``data`` to a new file ``path`` (mode 0600); False when it already exists."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    return True


@lru_cache(maxsize=8)
def service_key(instance_path: str) -> ECKey:
    """Return the service's P-384 signing key, generating it on first use."""
    path = Path(instance_path) / "keys" / "service-key.jwk.json"
    if not path.exists():
        key = ECKey.generate_key("P-384", parameters={"alg": SERVICE_KEY_ALG, "use": "sig"})
        key_dict = key.as_dict(private=True)
        key_dict["kid"] = key.thumbprint()
        _write_exclusive(path, orjson.dumps(key_dict))
    return ECKey.import_key(orjson.loads(path.read_bytes()))
