"""``python -m vastops.sim``: run the simulator, as ``vastops sim`` does."""

from vastops.sim.run import main

if __name__ == "__main__":
    raise SystemExit(main())
