"""Settings of the room service (each also an option and a ``SWITCHBOARD_*`` variable).

Field names carry a ``room``/``history``/``password`` prefix so that they stay unambiguous
when several services' options share one command line or environment.
"""

from __future__ import annotations

from dataclasses import dataclass

from switchboard.shared import checks
from switchboard.shared.config import setting, setting_of
from switchboard.shared.errors import ConfigError
from switchboard.shared.partitions import Membership
from switchboard.shared.store import StoreConfig


@dataclass(frozen=True)
class Config:
    room_instance: str = setting(
        "room", "This instance's name, as the gateways' --services name it (room-0, room-1, "
        "... when rooms and presence are partitioned over several instances).",
        check=checks.service_name,
    )
    room_instances: tuple[str, ...] = setting(
        (), "Every instance rooms (by room id) and presence (by user id) are partitioned "
        "over, this one included, as NAME,NAME...; each keeps its own --room-db, or all "
        "share one --store database. Empty: this instance alone.", check=checks.service_name,
    )
    store: str = setting_of(StoreConfig, "store")
    store_pool_size: int = setting_of(StoreConfig, "store_pool_size")
    store_timeout: float = setting_of(StoreConfig, "store_timeout")
    room_lease: float = setting(
        4.0, "With a PostgreSQL --store: seconds an instance's ownership lease lasts "
        "unrenewed (it is renewed four times as often). An instance that dies or freezes "
        "has its rooms and users taken over by the others this long after its last "
        "renewal, and writes nothing once its lease lapsed (docs/storage.md)."
    )
    room_handover: bool = setting(
        True, "With a PostgreSQL --store: on SIGTERM, commit what is queued and give the "
        "lease back, so that the other instances take this one's rooms and users over at "
        "once (a restart in place then takes them back). Off: keep the lease, so that a "
        "restart in place moves nothing, and a stop for good pauses them for --room-lease."
    )
    room_db: str = setting(
        "var/room.sqlite3",
        "With --store sqlite: the SQLite file (WAL) holding rooms and message history; its "
        "directory is created.",
    )
    room_max_users_default: int = setting(
        100, "maxUsers of a created room when the client gives none."
    )
    room_max_users_limit: int = setting(
        1000, "Largest maxUsers a client may ask for when creating a room."
    )
    room_unjoined_ttl: float = setting(
        600.0,
        "Seconds a room that nobody has joined yet (just created, or loaded at start) is kept "
        "before it is deleted; 0 keeps such rooms forever.",
    )
    room_empty_grace: float = setting(
        60.0,
        "Seconds a room left empty (its last member left, disconnected or vanished with a "
        "crashed gateway) is kept, with its history, before it is deleted, so that members "
        "coming back find it; 0 deletes it at once.",
    )
    recovery_grace: float = setting(
        5.0,
        "Seconds a socket with connection state recovery stays registered after its gateway "
        "is lost, so that a client recovering on another gateway never looked offline.",
    )
    history_default_limit: int = setting(
        50, "Messages returned by 'get history' when the client gives no limit."
    )
    history_max_limit: int = setting(
        100, "Largest limit a client may ask 'get history' for."
    )
    max_content: int = setting(
        1000, "Longest chat, room, private or broadcast message, characters."
    )
    max_username: int = setting(50, "Longest display name, characters.")
    max_room_id: int = setting(50, "Longest room id, characters.")
    max_room_name: int = setting(100, "Longest room name, characters.")
    banned_words: str = setting(
        "", "Comma-separated words or phrases replaced by *** in user text (messages, "
        "names), case-insensitively, whole words only (e.g. 'darn,heck no')."
    )
    welcome_message: str = setting(
        "Welcome to switchboard!", "Text of the 'welcome' event sent on connecting to '/'."
    )
    password_time_cost: int = setting(
        3, "argon2id time cost (iterations) for room passwords."
    )
    password_memory_kib: int = setting(
        65536, "argon2id memory cost in KiB for room passwords."
    )
    password_parallelism: int = setting(
        4, "argon2id parallelism (lanes) for room passwords."
    )
    password_workers: int = setting(
        2, "Threads hashing/verifying room passwords at once (each uses the memory cost)."
    )

    def __post_init__(self) -> None:
        if self.room_instances and self.room_instance not in self.room_instances:
            raise ConfigError(f"--room-instance {self.room_instance!r} is none of "
                              f"--room-instances ({', '.join(self.room_instances)})")
        self.partition()  # names it cannot hash over are refused at start
        StoreConfig.of(self)  # as are store settings out of range
        if self.room_lease < 0.2:
            raise ConfigError(f"--room-lease {self.room_lease:g}: must be at least 0.2 s")

    def partition(self) -> Membership:
        """The instances this one shares rooms and presence with."""
        return Membership.of(self.room_instances or (self.room_instance,))
