"""Ports for child processes: outside the kernel's ephemeral range, never twice."""

from __future__ import annotations

import socket

from services.suite.ports import METRICS_OFFSET, ephemeral_low, free_port


def test_free_ports_are_below_the_ephemeral_range_with_their_metrics_port_free():
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == len(ports)
    for port in ports:
        assert port + METRICS_OFFSET < ephemeral_low()
        for candidate in (port, port + METRICS_OFFSET):
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", candidate))


def test_a_port_zero_bind_never_gets_a_port_handed_out():
    handed_out = {free_port() for _ in range(20)}
    sockets = [socket.socket() for _ in range(200)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        assert not handed_out & {sock.getsockname()[1] for sock in sockets}
    finally:
        for sock in sockets:
            sock.close()
