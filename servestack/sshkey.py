"""The lock-only SSH public key: the default admin key of Azure VMs, which no one can log in with.

A Linux profile with password login disabled must carry an SSH key, or Azure rejects it
("Authentication using either SSH or by user name and password must be enabled in Linux
profile"). Without an operator key (Pulumi: `servestack:sshPublicKey`; Terraform: the
`ssh_public_key` variable) both engines give the VMs this key instead: its modulus is the
RSA-2048 challenge number, whose factors RSA Laboratories destroyed, so no private key exists
for it. Nobody can log in, and no key is generated or stored anywhere.

No SDK imports: the Pulumi components and the Terraform renderer both use it.
"""

from __future__ import annotations

import base64

RSA_2048 = int(
    "25195908475657893494027183240048398571429282126204032027777137836043662020707595556264"
    "01852588078440691829064124951508218929855914917618450280848912007284499268739280728777"
    "67359714183472702618963750149718246911650776133798590957000973304597488084284017974291"
    "00642458691817195118746121515172654632282216869987549182422433637259085141865462043576"
    "79842338718477444792073993423658482382428119816381501067481045166037730605620161967625"
    "61338441436038339044149526344321901146575444541784240209246165157233507787077498171257"
    "72467962926386356373289912154831438167899885040445364023527381951378636564391212010397"
    "122822120720357")
RSA_EXPONENT = 65537
COMMENT = "servestack-no-login"


def lock_only_ssh_key() -> str:
    """An ssh-rsa public key (RFC 4253 wire format) nobody holds the private half of."""
    def string(data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + data

    def mpint(value: int) -> bytes:
        return string(value.to_bytes(value.bit_length() // 8 + 1, "big"))

    blob = string(b"ssh-rsa") + mpint(RSA_EXPONENT) + mpint(RSA_2048)
    return f"ssh-rsa {base64.b64encode(blob).decode()} {COMMENT}"
