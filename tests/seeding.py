"""Many connections without the consent dance (the function lives in ``bench`` so benchmarks share it)."""

from __future__ import annotations

from bench.seeding import seed_connections

__all__ = ["seed_connections"]
