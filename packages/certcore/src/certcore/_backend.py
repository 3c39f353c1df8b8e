"""Placeholder until certcore.ops lands: reports that only the reference backend exists."""


def backend() -> dict[str, str]:
    return {}
