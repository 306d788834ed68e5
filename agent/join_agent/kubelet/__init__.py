"""The kubelet: its command line (command), what in its settings would fight join-agent
(settings, worker side: it may read YAML), the OS side of running it (processes), and the
state machine that supervises it (supervisor)."""
