"""The bench and reliability kit: floor and served figures, agreement, soak, the naive baseline.

Reached only through ``iweblens bench``, ``iweblens soak`` and the processes they start, so
nothing is exported here and importing the package costs nothing.
"""

__all__: list[str] = []
