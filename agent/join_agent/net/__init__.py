"""HTTP for the worker child and the verbs: one httpx gateway with deadlines and size caps
(transport). Never imported by the resident daemon."""
