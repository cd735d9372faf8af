"""Self-healing playbooks: a trigger on a charger's state starts a run of steps (commands,
waits, escalation) within guard rails; every action is audited with the playbook as actor."""
