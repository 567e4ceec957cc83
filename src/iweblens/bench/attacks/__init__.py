"""Hostile requests for the pod harness (``iweblens.bench.pod``), one module per kind of fault.

Each module builds its hostile inputs in code (nothing hostile is committed) and offers attacks
that run against one imitated pod, are bounded in connections and time, and return an
``iweblens.bench.attacks.results.AttackResult``.
"""

__all__: list[str] = []  # the attacks are used from their own modules
