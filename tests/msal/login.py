"""Logs in to a simulator with Microsoft's own MSAL for Python and calls an
action with each token: the check that a client nobody here wrote works
against the simulator unchanged.

MSAL walks the way it walks for the real service: instance discovery (at
the URL it is given), tenant discovery (the OpenID configuration), then the
token endpoint that document names. Over HTTPS only, trusting the CA file
it is given and nothing else.

Inputs (environment): SIM_URL, SIM_CA, SIM_TENANT, SIM_CLIENT_ID,
SIM_CLIENT_SECRET, SIM_CERT_PEM, SIM_KEY_PEM, SIM_MACHINES (comma-separated
machine ids, one per login). Prints one JSON line per login.
"""

import hashlib
import json
import os
import sys

import msal
import requests
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding


def main():
    url = os.environ["SIM_URL"]
    ca = os.environ["SIM_CA"]
    tenant = os.environ["SIM_TENANT"]
    client_id = os.environ["SIM_CLIENT_ID"]
    machines = os.environ["SIM_MACHINES"].split(",")
    with open(os.environ["SIM_CERT_PEM"]) as f:
        cert_pem = f.read()
    with open(os.environ["SIM_KEY_PEM"]) as f:
        key_pem = f.read()
    der = x509.load_pem_x509_certificate(cert_pem.encode()).public_bytes(Encoding.DER)
    credentials = [
        ("secret", os.environ["SIM_CLIENT_SECRET"]),
        # PS256 with x5t#S256 and x5c, as MSAL signs when it has the certificate.
        ("certificate-ps256", {"private_key": key_pem, "public_certificate": cert_pem}),
        # RS256 with x5t, as MSAL signs when given a SHA-1 thumbprint.
        ("certificate-rs256", {"private_key": key_pem,
                               "thumbprint": hashlib.sha1(der).hexdigest()}),
    ]
    session = requests.Session()
    session.verify = ca
    for (name, credential), machine in zip(credentials, machines):
        # The first login walks instance discovery at the simulator. MSAL
        # sends its later alias look-ups to the world-wide host whatever it
        # is told, so the others turn instance discovery off (tenant
        # discovery stays on); the test's dead loopback proxy stops any
        # request that would leave this machine.
        discovery = f"{url}/common/discovery/instance" if name == "secret" else False
        app = msal.ConfidentialClientApplication(
            client_id,
            client_credential=credential,
            authority=f"{url}/{tenant}",
            instance_discovery=discovery,
            http_client=session,
        )
        result = app.acquire_token_for_client(
            scopes=["https://api.securitycenter.microsoft.com/.default"])
        if "access_token" not in result:
            print(json.dumps({"login": name, "error": result}), flush=True)
            return 1
        reply = session.post(
            f"{url}/api/machines/{machine}/isolate",
            headers={"Authorization": "Bearer " + result["access_token"]},
            json={"Comment": f"msal {name}", "IsolationType": "Selective"},
        )
        print(json.dumps({"login": name, "status": reply.status_code,
                          "action": reply.json().get("id")}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
