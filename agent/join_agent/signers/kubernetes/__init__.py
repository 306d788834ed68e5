"""The Kubernetes signer: discovery of the cluster CA (discovery, bootstrap_token), the
CertificateSigningRequest API (csr_api), and TLS bootstrap and renewal through it (signer)."""
