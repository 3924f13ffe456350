"""Back-off on failed API keys, per client address: sans-I/O, the caller passes the time."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field


@dataclass(frozen=True)
class BackoffPolicy:
    max_failures: int = 10
    """Failed keys an address may present within `window_s` before it is blocked."""
    window_s: float = 60.0
    first_block_s: float = 60.0
    """The first block; each further block from the same address doubles it, up to `max_block_s`."""
    max_block_s: float = 3600.0
    max_addresses: int = 4096
    """Addresses remembered at most (the oldest are forgotten first), so many addresses cost bounded memory."""


@dataclass
class _Record:
    failures: list[float] = field(default_factory=list)
    blocked_until: float = 0.0
    blocks: int = 0
    last_seen: float = 0.0


class KeyBackoff:
    """Counts failed keys per address; past the policy's limit the address is blocked for a while."""

    def __init__(self, policy: BackoffPolicy | None = None) -> None:
        self.policy = policy or BackoffPolicy()
        self._records: dict[str, _Record] = {}

    def retry_after(self, address: str, now: float) -> float | None:
        """Seconds the address must wait before presenting a key again, or None if it may now."""
        record = self._records.get(address)
        if record is None or now >= record.blocked_until:
            return None
        return record.blocked_until - now

    def failed(self, address: str, now: float) -> float | None:
        """A key from `address` was refused; returns the block it starts now, if any, in seconds."""
        policy = self.policy
        record = self._records.pop(address, None) or _Record()
        self._records[address] = record  # re-inserted: the dict stays in order of last failure
        if record.blocks and now - max(record.blocked_until, record.last_seen) >= policy.max_block_s:
            record.blocks = 0  # a long quiet spell forgives the earlier blocks
        record.last_seen = now
        record.failures = [t for t in record.failures if now - t < policy.window_s] + [now]
        self._forget_oldest()
        if len(record.failures) < policy.max_failures:
            return None
        block = min(policy.first_block_s * 2 ** record.blocks, policy.max_block_s)
        record.blocks += 1
        record.failures.clear()
        record.blocked_until = now + block
        return block

    def succeeded(self, address: str) -> None:
        """A valid key came from `address`: its failures are forgotten."""
        self._records.pop(address, None)

    def _forget_oldest(self) -> None:
        while len(self._records) > self.policy.max_addresses:
            del self._records[next(iter(self._records))]


def client_address(peer: str, forwarded_for: list[str]) -> str:
    """The client's address: the peer's, or behind a reverse proxy on loopback the address that
    proxy appended last to `X-Forwarded-For` (a remote peer's header is not trusted)."""
    try:
        loopback = ipaddress.ip_address(peer).is_loopback
    except ValueError:
        return peer
    hops = [hop.strip() for header in forwarded_for for hop in header.split(",") if hop.strip()]
    return hops[-1] if loopback and hops else peer
