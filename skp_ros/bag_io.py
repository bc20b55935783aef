"""Read and write ROS 2 bags (rosbag2, sqlite3 or mcap) without rosbag2_py.

``rosbag2_py`` and ``ros2 bag`` are not installable everywhere (they are not on PyPI), while the
pure-Python ``rosbags`` package reads and writes the same files (metadata version 9, what
Jazzy's ``ros2 bag`` writes). rclpy's ``serialize_message`` produces exactly the CDR bytes a
bag stores, so this module keeps message payloads as raw bytes: ``rosbags`` only stores them
under the right message type (its Jazzy typestore supplies the message definition and type
hash that other tools expect), and rclpy turns them back into message objects. No ``rclpy.init``
is needed for any of this.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

from rclpy.serialization import deserialize_message, serialize_message
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore
from ruamel.yaml import YAML

__all__ = [
    "COMPRESSED_IMAGE_TYPE",
    "IMAGE_TYPE",
    "IMAGE_TYPES",
    "POINTCLOUD2_TYPE",
    "STORAGE_FORMATS",
    "BagError",
    "BagMessage",
    "BagWriter",
    "bag_storage",
    "bag_topics",
    "find_image_topic",
    "header_stamp_ns",
    "message_class",
    "msgtype_of",
    "ns_to_stamp",
    "read_messages",
    "replace_header_stamp",
    "stamp_to_ns",
]

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE_TYPE = "sensor_msgs/msg/CompressedImage"
POINTCLOUD2_TYPE = "sensor_msgs/msg/PointCloud2"
IMAGE_TYPES = (IMAGE_TYPE, COMPRESSED_IMAGE_TYPE)
STORAGE_FORMATS = ("sqlite3", "mcap")
_PLUGINS = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}
_BAG_VERSION = 9  # what Jazzy's ros2 bag writes

# Built once: generating message definitions walks the whole type graph.
_TYPESTORE = get_typestore(Stores.ROS2_JAZZY)


class BagError(RuntimeError):
    """A bag is missing, unreadable or lacks what was asked for; the message says which."""


def message_class(msgtype: str) -> type:
    """The rclpy class for 'pkg/msg/Name' (rosidl_runtime_py's get_message is not available)."""
    parts = msgtype.split("/")
    if len(parts) != 3 or parts[1] != "msg":
        raise BagError(f"not a ROS 2 message type name: {msgtype!r} (expected pkg/msg/Name)")
    package, _, name = parts
    try:
        return getattr(importlib.import_module(f"{package}.msg"), name)
    except (ImportError, AttributeError) as exc:
        raise BagError(f"message type {msgtype!r} is not importable here: {exc}") from None


def msgtype_of(msg_or_class: Any) -> str:
    """'sensor_msgs/msg/Image' for the rclpy class (or an instance of it)."""
    cls = msg_or_class if isinstance(msg_or_class, type) else type(msg_or_class)
    return f"{cls.__module__.split('.')[0]}/msg/{cls.__name__}"


def stamp_to_ns(stamp: Any) -> int:
    """builtin_interfaces/Time as integer nanoseconds (exact, unlike float seconds)."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def ns_to_stamp(ns: int) -> Any:
    """Integer nanoseconds as builtin_interfaces/Time."""
    from builtin_interfaces.msg import Time

    sec, nanosec = divmod(int(ns), 1_000_000_000)
    return Time(sec=sec, nanosec=nanosec)


def _cdr_byte_order(view: memoryview) -> Literal["little", "big"]:
    """Byte order from the CDR encapsulation header; rejects what cannot hold a Header."""
    if len(view) < 12 or view[0] != 0 or view[1] not in (0, 1, 2, 3):
        raise BagError("payload is not CDR with a leading std_msgs/Header")
    return "little" if view[1] & 1 else "big"


def header_stamp_ns(data: bytes | memoryview) -> int:
    """The header stamp of a CDR message whose first field is std_msgs/Header, in ns.

    Reads 12 bytes instead of deserialising a whole image, so the player can match outputs to
    inputs at any frame rate. The 4-byte encapsulation header says the byte order.
    """
    view = memoryview(data)
    order = _cdr_byte_order(view)
    sec = int.from_bytes(view[4:8], order, signed=True)
    nanosec = int.from_bytes(view[8:12], order, signed=False)
    return sec * 1_000_000_000 + nanosec


def replace_header_stamp(data: bytes | memoryview, stamp_ns: int) -> bytes:
    """A copy of a CDR message (leading std_msgs/Header) with its stamp set to `stamp_ns`.

    Lets the player send a bag frame under a stamp of its own (the warm-up handshake) without
    deserialising the image.
    """
    view = memoryview(data)
    order = _cdr_byte_order(view)
    sec, nanosec = divmod(int(stamp_ns), 1_000_000_000)
    stamp = sec.to_bytes(4, order, signed=True) + nanosec.to_bytes(4, order, signed=False)
    return bytes(view[:4]) + stamp + bytes(view[12:])


@dataclass(frozen=True, slots=True)
class BagMessage:
    """One stored message: its topic and type, bag timestamp (ns) and raw CDR bytes."""

    topic: str
    msgtype: str
    timestamp_ns: int
    data: bytes

    def deserialize(self) -> Any:
        """The rclpy message object."""
        return deserialize_message(self.data, message_class(self.msgtype))

    @property
    def stamp_ns(self) -> int:
        """Header stamp in ns (for types with a leading header, e.g. images and clouds)."""
        return header_stamp_ns(self.data)


def _check_bag(path: Path) -> None:
    if not (path / "metadata.yaml").is_file():
        raise BagError(f"{path} is not a rosbag2 directory (no metadata.yaml)")


def bag_storage(path: str | Path) -> str:
    """'sqlite3' or 'mcap', from the bag's metadata."""
    bag = Path(path)
    _check_bag(bag)
    metadata = YAML(typ="safe").load((bag / "metadata.yaml").read_text())
    try:
        return str(metadata["rosbag2_bagfile_information"]["storage_identifier"])
    except (KeyError, TypeError):
        raise BagError(f"{bag}/metadata.yaml has no storage_identifier") from None


def bag_topics(path: str | Path) -> dict[str, tuple[str, int]]:
    """topic -> (msgtype, message count)."""
    bag = Path(path)
    _check_bag(bag)
    with Reader(bag) as reader:
        return {topic: (info.msgtype or "", info.msgcount) for topic, info in reader.topics.items()}


def find_image_topic(path: str | Path, topic: str | None = None) -> tuple[str, str]:
    """(topic, msgtype) of the image stream to replay.

    With no topic, the bag must hold exactly one Image or CompressedImage topic besides the
    registered depth images of such topics (``<namespace>/depth/image_raw``). A base topic
    whose bag only has '<topic>/compressed' resolves to that, as image_transport names it.
    """
    from skp_ros.camera_geometry import side_topics

    topics = bag_topics(path)
    images = {t: m for t, (m, _) in topics.items() if m in IMAGE_TYPES}
    # A registered depth stream beside an image stream is its side input, not a camera.
    depths = {side_topics(t)[1] for t in images}
    images = {t: m for t, m in images.items() if t not in depths}
    listing = ", ".join(f"{t} ({m})" for t, (m, _) in sorted(topics.items())) or "none"
    if topic is None:
        if len(images) != 1:
            raise BagError(
                f"{path}: expected exactly one image topic, found {len(images)}; pass --topic. "
                f"Topics: {listing}"
            )
        return next(iter(images.items()))
    for candidate in (topic, f"{topic.rstrip('/')}/compressed"):
        if candidate in images:
            return candidate, images[candidate]
    if topic in topics:
        raise BagError(
            f"{path}: topic {topic} has type {topics[topic][0]}, expected one of "
            f"{', '.join(IMAGE_TYPES)}"
        )
    raise BagError(f"{path}: no topic {topic}. Topics: {listing}")


def read_messages(path: str | Path, topics: Iterable[str] | None = None) -> Iterator[BagMessage]:
    """Messages in bag-timestamp order, optionally only those of `topics`."""
    bag = Path(path)
    _check_bag(bag)
    wanted = None if topics is None else set(topics)
    with Reader(bag) as reader:
        connections = [c for c in reader.connections if wanted is None or c.topic in wanted]
        if wanted is not None and not connections:
            raise BagError(f"{bag}: none of the topics {sorted(wanted)} is in the bag")
        for connection, timestamp, data in reader.messages(connections=connections):
            yield BagMessage(connection.topic, connection.msgtype, timestamp, bytes(data))


class BagWriter:
    """Create a new bag and write rclpy messages (or raw CDR) to it; use as a context manager.

    The directory must not exist yet (rosbags never overwrites). Topics are registered on
    first use, with the message definition from the Jazzy typestore so any reader can decode
    them.
    """

    def __init__(self, path: str | Path, storage: str = "sqlite3") -> None:
        if storage not in _PLUGINS:
            raise BagError(f"unknown storage {storage!r}; choose one of {STORAGE_FORMATS}")
        self.path = Path(path)
        if self.path.exists():
            raise BagError(f"{self.path} exists already; rosbag2 bags are never overwritten")
        self.storage = storage
        self._writer = Writer(self.path, version=_BAG_VERSION, storage_plugin=_PLUGINS[storage])
        self._connections: dict[str, Any] = {}
        self.counts: dict[str, int] = {}

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer.open()

    def close(self) -> None:
        """Write metadata.yaml; a bag is only readable after this."""
        self._writer.close()

    def add_topic(self, topic: str, msgtype: str) -> None:
        """Register `topic` with type 'pkg/msg/Name' (done implicitly by the write methods)."""
        existing = self._connections.get(topic)
        if existing is not None:
            if existing.msgtype != msgtype:
                raise BagError(f"topic {topic} already has type {existing.msgtype}, not {msgtype}")
            return
        if msgtype not in _TYPESTORE.types:
            raise BagError(f"message type {msgtype} is unknown to the rosbags Jazzy typestore")
        self._connections[topic] = self._writer.add_connection(topic, msgtype, typestore=_TYPESTORE)
        self.counts[topic] = 0

    def write_raw(self, topic: str, msgtype: str, data: bytes, timestamp_ns: int) -> None:
        """Store already-serialised CDR bytes (e.g. from a raw subscription)."""
        self.add_topic(topic, msgtype)
        self._writer.write(self._connections[topic], int(timestamp_ns), data)
        self.counts[topic] += 1

    def write(self, topic: str, msg: Any, timestamp_ns: int) -> None:
        """Serialise an rclpy message and store it with bag timestamp `timestamp_ns`."""
        self.write_raw(topic, msgtype_of(msg), serialize_message(msg), timestamp_ns)
