"""Start-up cost: loading every trigger type leaves the heavy optional libraries unloaded.

pyjwt with cryptography and httpx cost about 100 ms of imports together; only a jwt webhook
and a running github trigger need them, so neither the CLI nor a daemon without such
triggers pays for them.
"""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import json, sys
from wfsched.plugins import load_registry
from wfsched.daemon import serve  # noqa: F401 - the daemon's own imports count too
registry = load_registry(None)
print(json.dumps({
    "types": [t.type for t in registry.all()],
    "loaded": sorted(m for m in ("jwt", "httpx", "cryptography") if m in sys.modules),
}))
"""


def test_loading_every_trigger_type_imports_no_jwt_crypto_or_http_client() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    found = json.loads(out.strip().splitlines()[-1])
    assert {"cron", "email", "github", "manual", "webhook"} <= set(found["types"])
    assert found["loaded"] == []
