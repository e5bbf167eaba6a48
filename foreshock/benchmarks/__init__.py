"""Quality benchmarks of Foreshock's detectors on public labelled data.

`foreshock.benchmarks.nab` runs and scores the Numenta Anomaly Benchmark;
`foreshock.benchmarks.nab_scoring` holds its scoring method alone.
"""

from __future__ import annotations

__all__: list[str] = []
