"""Pure, sans-IO LISP codec: bytes <-> frozen dataclasses (stdlib only).

Map of the package:

- `errors`   LispDecodeError (peer sent garbage) / LispEncodeError (we misused the API)
- `cursor`   bounds-checked Reader and placeholder-filling Writer
- `address`  AFIs and the LCAF registry (RFC 8060)
- `prefix`   EidPrefix: address/mask-len in an instance-ID
- `records`  mapping records, locators, the ACT field and Record TTLs
- `messages` Map-Request/Reply/Register/Notify/Notify-Ack
- `ecm`      Encapsulated Control Message with inner IPv4/IPv6 + UDP
- `control`  decode_message: a control datagram (types 1-5 or an ECM) by its type
- `auth`     HMAC-SHA-1/SHA-256 sign and constant-time verify from raw bytes
- `data`     RFC 9300 data header and its LISP-GPE (RFC 9305) form
"""

from .address import (
    LCAF_REGISTRY,
    NO_ADDRESS,
    Address,
    AfiListAddress,
    Afi,
    DistinguishedName,
    InstanceIdAddress,
    Lcaf,
    LcafType,
    MacAddress,
    NoAddress,
    SourceDestAddress,
    UnknownLcaf,
    address_from_bytes,
    address_to_bytes,
    register_lcaf,
)
from .locator_lists import ElpHop, ExplicitLocatorPath, ReplicationList, RleEntry
from .auth import DIGEST_LENGTHS, AuthAlgorithm, AuthResult, check_authentication, sign, verify
from .control import decode_message
from .data import LISP_DATA_PORT, MAX_IID, LispDataHeader, NextProtocol
from .ecm import LISP_CONTROL_PORT, EncapsulatedControlMessage
from .errors import LispDecodeError, LispEncodeError
from .messages import (
    MESSAGE_NAMES,
    ControlMessage,
    MapNotify,
    MapNotifyAck,
    MapRegister,
    MapReply,
    MapRequest,
    MessageType,
)
from .prefix import EidPrefix
from .records import TTL_INFINITE, TTL_ONE_DAY, Action, Locator, MappingRecord, MapRequestRecord

__all__ = [
    "Action",
    "Address",
    "Afi",
    "AfiListAddress",
    "AuthAlgorithm",
    "AuthResult",
    "ControlMessage",
    "DIGEST_LENGTHS",
    "DistinguishedName",
    "EidPrefix",
    "ElpHop",
    "EncapsulatedControlMessage",
    "ExplicitLocatorPath",
    "InstanceIdAddress",
    "LCAF_REGISTRY",
    "LISP_CONTROL_PORT",
    "LISP_DATA_PORT",
    "Lcaf",
    "LcafType",
    "LispDataHeader",
    "LispDecodeError",
    "LispEncodeError",
    "Locator",
    "MAX_IID",
    "MESSAGE_NAMES",
    "MacAddress",
    "MapNotify",
    "MapNotifyAck",
    "MapRegister",
    "MapReply",
    "MapRequest",
    "MapRequestRecord",
    "MappingRecord",
    "MessageType",
    "NO_ADDRESS",
    "NextProtocol",
    "NoAddress",
    "ReplicationList",
    "RleEntry",
    "SourceDestAddress",
    "TTL_INFINITE",
    "TTL_ONE_DAY",
    "UnknownLcaf",
    "address_from_bytes",
    "address_to_bytes",
    "check_authentication",
    "decode_message",
    "register_lcaf",
    "sign",
    "verify",
]
