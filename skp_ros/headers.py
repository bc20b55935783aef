"""Copying a message header: every output carries its input image's stamp and frame_id."""

from __future__ import annotations

from builtin_interfaces.msg import Time
from std_msgs.msg import Header

__all__ = ["copy_header"]


def copy_header(header: Header | None) -> Header:
    """Copy stamp and frame_id, so later edits of the caller's header never alter our message.

    None gives an empty header (stamp 0, no frame).
    """
    if header is None:
        return Header()
    stamp = Time(sec=header.stamp.sec, nanosec=header.stamp.nanosec)
    return Header(stamp=stamp, frame_id=header.frame_id)
