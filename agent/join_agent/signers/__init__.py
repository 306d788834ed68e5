"""Certificate signers behind one small interface (base): CFSSL's remote API (cfssl) and the
Kubernetes CSR API (kubernetes/), the secrets they use (credentials), and the one place that
builds the configured signer for an enrollment (factory). Worker side: httpx, cryptography."""
