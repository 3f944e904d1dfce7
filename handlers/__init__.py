"""Handler modules: one business rule each, found by shared.routing.discover().

Each module defines `router = Router()` and decorates `async def` handlers with
`@router.on(entity=..., message=...)`. Adding a consumer is adding a module here.
"""
