"""What runs on the GPU: the instance vastops rents, what it runs, and how vastops reaches it.

The modules:

    template    the body that creates the instance (image, env with the published ports,
                disk, on-start script, launch mode, label), built from the settings
    offers      vast's market with the seed's booking rules, and what each offer costs
    booking     renting an offer (``instance create``) until it is running and healthy,
                and destroying an instance; both audited
    health      one probe of the instance's health through vast's auth edge, classified
    agent       ``vastops agent``: runs on the instance (standard library only): vLLM's load,
                and the dead-man switch that stops the GPU when the watchdog's lease lapses
    commands    ``vastops instance ...``: the CLI's shell around the modules above
    kit         the seed's compose stack (vLLM, nginx /health, ``llm-stack.service``) for a
                vast VM instance or any GPU host with Docker; its files are in ``kit/``

Nothing is imported here.
"""
