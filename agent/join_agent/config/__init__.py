"""The configuration: its typed model (model), reading a TOML document key by key
(reader), the [[certificate]] tables (tables), and loading the file (loading)."""
