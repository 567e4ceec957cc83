"""The process harness the study and the bench kits share: pods imitated on this machine.

``cgroup`` holds processes to a pod's CPU quota and memory limit; ``manifest`` reads those limits,
the probes and the termination grace from the Deployment; ``serving`` starts ``iweblens serve`` on
a free loopback port and waits for its readiness; ``procfs`` reads a process's memory, descriptors
and connections from ``/proc``. It reaches the service as a separate process only.

Its modules are imported by name, so nothing is exported here.
"""

__all__: list[str] = []
