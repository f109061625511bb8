"""The demo's fleet: two instances under one watchdog, a chat model and an embedding model.

``vastops demo`` rents both from the simulator's market (the chat one first: the ids are the
simulator's next contracts, 12345 then 12346), each with its own model (its LLM answers by that
name: vLLM's ``--served-model-name`` in its ``VLLM_ARGS``) and its own idle limit, and names them
in a fleet file (``fleet.toml`` in the demo folder, ``VASTOPS_FLEET_FILE``; the format in
vastops/fleet.py), one rental after the other (``book_fleet``). Each has a past of its own (vastops/demo/history.py) and its own share of the
live traffic (vastops/demo/traffic.py): the chat consumers ask the chat model, the search one the
embedding model.
"""

from __future__ import annotations

import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from vastops.processes import signal_group

if TYPE_CHECKING:
    from vastops.demo.history import Past
    from vastops.demo.run import Demo

FLEET_FILE = "fleet.toml"
CHAT_ID, EMBED_ID = 12345, 12346  # the simulator's first two contracts (--first-contract-id 12345), booked in this order
CHAT_MODEL, EMBED_MODEL = "mistralai/Mistral-7B-Instruct-v0.3", "BAAI/bge-m3"
EMBED_MINUTES = 3.0  # the embedding instance's idle limit (--embed-minutes); the chat one's is --minutes
DISK_GB, STORAGE_COST = 150.0, 0.10  # the simulator's instance: 150 GB at $0.10/GB/month


@dataclass(frozen=True)
class DemoInstance:
    """One instance of the demo's fleet: its name and id, the model it serves, its idle limit,
    the live traffic's consumers that use it, and the rates its seeded past ran at."""

    name: str
    instance_id: int
    model: str
    idle_minutes: float
    consumers: tuple[str, ...]
    gpu_name: str
    dph_base: float
    seed: int  # its past's own random draws
    past_idle_minutes: float  # its idle limit as its past had it (a team's: longer than the demo's)

    @property
    def label(self) -> str:
        return f"{self.name} ({self.instance_id})"

    @property
    def storage_dph(self) -> float:
        return DISK_GB * STORAGE_COST / 720

    def past(self) -> Past:
        from vastops.demo.history import Past  # the ledger's modules: only when the demo seeds

        return Past(self.instance_id, self.gpu_name, self.dph_base, self.storage_dph, self.model, self.past_idle_minutes, self.seed)

    def booking_env(self, env: dict[str, str]) -> dict[str, str]:
        """The settings its rental runs with: its model (the template's, and the name its LLM answers
        as) and its idle limit (its agent's, until a watchdog leases it). demo.env (the default
        instance's rental reads it) names the fleet file, whose default is that instance."""
        args = env.get("VASTOPS_VLLM_ARGS", "--max-model-len 8192")
        # Not the fleet file: a rental reads its own settings, not the default instance's.
        return {
            **{k: v for k, v in env.items() if k != "VASTOPS_FLEET_FILE"},
            "VASTOPS_MODEL": self.model,
            "VASTOPS_VLLM_ARGS": f"{args} --served-model-name {self.model}",
            "VAST_AUTO_SHUTDOWN_MINUTES": f"{self.idle_minutes:g}",
        }


def demo_fleet(chat_minutes: float, embed_minutes: float = EMBED_MINUTES) -> tuple[DemoInstance, DemoInstance]:
    """The chat instance (an RTX 3090 at $0.40/h, the seed's) and the embedding one (a cheaper rate); their pasts
    ran with idle limits of 30 and 10 minutes, the live demo's are short, so a stop comes while you watch."""
    return (
        DemoInstance("chat", CHAT_ID, CHAT_MODEL, chat_minutes, ("team-chat", "batch-eval"), "RTX 3090", 0.40, 7, 30.0),
        DemoInstance("embed", EMBED_ID, EMBED_MODEL, embed_minutes, ("team-search",), "RTX 3090", 0.22, 11, 10.0),
    )


def fleet_toml(fleet: tuple[DemoInstance, ...]) -> str:
    """The fleet file's text: the chat instance the default (the seed's routes act on it)."""
    lines = [
        "# The vastops demo's fleet (rewritten by each demo): VASTOPS_FLEET_FILE in demo.env.",
        f'default = "{fleet[0].name}"',
    ]
    for member in fleet:
        lines += [
            "",
            f"[instances.{member.name}]",
            f"id = {member.instance_id}",
            f'models = ["{member.model}"]',
            f'model = "{member.model}"',
            f"idle_minutes = {member.idle_minutes:g}",
        ]
    return "\n".join(lines) + "\n"


def write_fleet_file(folder: Path, fleet: tuple[DemoInstance, ...]) -> Path:
    path = folder / FLEET_FILE
    path.write_text(fleet_toml(fleet), encoding="utf-8")
    return path


def book_fleet(demo: Demo, env: dict[str, str]) -> bool:
    """Rent the demo's fleet as a new user would: the cheapest offers under the seed's rules, one an
    instance, each with ``vastops instance create`` (its progress in the demo's output). One after
    the other, so each gets the id its past was seeded for (the simulator's next contract) and the
    two followings share no rate limit; False when the first could not be rented."""
    from vastops.instance.offers import OfferRules
    from vastops.vast import VastClient, VastError

    try:
        offers = VastClient(demo.sim_key, f"http://127.0.0.1:{demo.sim_port}").search_offers(OfferRules().query(150))
    except VastError as exc:
        demo.say(f"vastops demo: WARNING: the simulator's market did not answer ({exc}); going on without an instance")
        return False
    if not offers:
        demo.say("vastops demo: WARNING: no offer on the simulator's market; going on without an instance")
        return False
    booked = 0
    for member, offer in zip(demo.fleet, offers, strict=False):
        if not _book_one(demo, env, member, offer.id, offer.gpu_name):
            break
        booked += 1
    if booked < len(demo.fleet):
        missing = ", ".join(m.label for m in demo.fleet[booked:])
        demo.say(f"vastops demo: WARNING: {missing} not rented; the fleet file still names it, the watchdog reports it missing")
    return booked > 0


def _book_one(demo: Demo, env: dict[str, str], member: DemoInstance, offer_id: int, gpu_name: str) -> bool:
    demo.say(f"vastops demo: renting offer {offer_id} ({gpu_name}) for {member.name}, {member.model}, with `vastops instance create`")
    # The default instance's id goes into demo.env (it is there already); another's into an env file of its own.
    if member is demo.fleet[0]:
        env_file = demo.env_path
    else:
        env_file = demo.folder / f"{member.name}.env"
        fd = os.open(env_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(
                f"# The demo's {member.name} instance (its id, written by `vastops instance create`); demo.env's fleet file names it too\n"
            )
    argv = [
        sys.executable,
        "-m",
        "vastops.cli",
        "--env-file",
        str(env_file.resolve()),
        "instance",
        "create",
        str(offer_id),
        "--yes",
        "--timeout",
        "120",
    ]
    book = demo.start("book", argv, member.booking_env(env))
    while book.proc.poll() is None and not demo.stopping.wait(0.2):
        pass
    if book.proc.poll() is None:  # Ctrl-C while it books
        signal_group(book.proc, signal.SIGTERM)
        return False
    demo.children.remove(book)
    for thread in book.threads:
        thread.join(5)
    if book.proc.returncode != 0:
        demo.say(f"vastops demo: WARNING: booking {member.name} failed (above)")
        return False
    return True
