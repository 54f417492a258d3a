"""The web dashboard (the ``calmq[dashboard]`` extra): ``calmq dashboard`` or mount
:func:`calmq.dashboard.app.create_app` in an existing Starlette/FastAPI app.

The JSON views (``api``) and the sampler are plain Python; only ``app`` and ``auth`` import
Starlette, so the rest stays usable without the extra. See docs/dashboard.md.
"""

from __future__ import annotations
