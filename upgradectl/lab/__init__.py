"""A rehearsal lab on one machine: real sshd nodes with call servers, HAProxy, and callers.

The test suite and the benchmarks use it; `python -m upgradectl.lab up` starts one by hand.
"""

from upgradectl.lab.account import LabAccount, lab_account
from upgradectl.lab.callgen import Call, CallGenerator, CallRecord, CallResult, Fate, place_calls
from upgradectl.lab.callserver import CallNode, CallService, NodeConfig
from upgradectl.lab.haproxy import HaProxy, ServerState
from upgradectl.lab.keys import KeyPair
from upgradectl.lab.lab import Lab, LabNode, SshHome
from upgradectl.lab.ports import free_ports
from upgradectl.lab.process import LabServer, ServerStartError, start_servers, stop_servers
from upgradectl.lab.sshd import SshServer
from upgradectl.lab.unixsocket import ask
from upgradectl.lab.waiting import wait_for

__all__ = [
    "Call",
    "CallGenerator",
    "CallNode",
    "CallRecord",
    "CallResult",
    "CallService",
    "Fate",
    "HaProxy",
    "KeyPair",
    "Lab",
    "LabAccount",
    "LabNode",
    "LabServer",
    "NodeConfig",
    "ServerStartError",
    "ServerState",
    "SshHome",
    "SshServer",
    "ask",
    "free_ports",
    "lab_account",
    "place_calls",
    "start_servers",
    "stop_servers",
    "wait_for",
]
