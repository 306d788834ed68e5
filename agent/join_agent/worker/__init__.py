"""What runs in the short-lived worker child (`join-agent worker <mode>`) and in `join`: an
enrollment (enroll), the kubeconfig it writes (kubeconfig), the serving certificate
(serving), the [[certificate]] tables (certificates) and their actions (actions); passes
holds one pass of each and the document the child prints. Loads cryptography and httpx:
the resident daemon never imports this package."""
