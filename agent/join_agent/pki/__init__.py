"""Keys and CSRs (keys), SPKI pins and the trusted path from a pinned CA (pinning), the
verification of issued certificates (checks), cryptography's version differences
(compat), and certificates as plain JSON-ready facts (facts). Worker side: cryptography."""
