"""Drop-in reporters for LLM gateways: they tell the watchdog when a request starts and ends.

Each module here runs inside the gateway's own process and environment, not vastops',
so it imports nothing from vastops and nothing beyond the standard library and what
its gateway already has (docs/gateways.md).

    litellm   a callback for LiteLLM proxy's ``litellm_settings: callbacks:``
"""
