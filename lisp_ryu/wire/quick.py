"""The shapes a Map-Server receives most, read at fixed offsets.

A Map-Resolver answers more Map-Requests than anything else, and almost all
of them look alike: an ECM without flags around an IPv4 (no options, not
fragmented) or IPv6 UDP datagram, holding a Map-Request without the M, P or
D bit, with one ITR-RLOC and one EID-record naming a single host address,
either as a plain AFI or inside an Instance-ID LCAF, and with or without an
xTR-ID (I bit).  `read_plain_request` recognises that shape with a few
struct reads and returns only what an answer needs, and the xTR-ID when the
request subscribes (I bit, and the N bit on its record); the full decoder
builds a dozen objects for the same bytes.

It returns None for every other datagram, and the caller falls back to the
full decoder, which handles the rest and says what is wrong.  It never
accepts what the full decoder would reject or read differently: it checks
the same lengths and checksums, and tests/wire/test_wire_quick.py holds it to
agreement with `EncapsulatedControlMessage.decode` on generated and mutated
datagrams.

Two peeks serve a Map-Server under a flood, to refuse work before the full
decode: `read_subscriber` (the xTR-ID of any subscribing ECM Map-Request)
and `read_register_eid` (the first EID of a Map-Register, whose owners' keys
can check its HMAC).  They only walk lengths and check no checksum: what
they return steers a refusal, never an answer, and a datagram they misread
is one the full decoder would refuse anyway (tests/wire/test_wire_quick.py
holds them to the full decoder on what it accepts).
"""

from __future__ import annotations

import struct

from .address import Afi, LcafType
from .messages import MessageType

__all__ = ["IID_LCAF_BODY", "PlainRequest", "PlainRequests", "read_plain_request", "read_register_eid",
           "read_subscriber"]

#: (nonce as its 8 bytes, instance-ID, EID address bytes, ITR-RLOC bytes, inner UDP
#: source port, xTR-ID of a subscribing request or None).  A byte string of 4 is IPv4,
#: of 16 IPv6; the Map-Reply goes to (ITR-RLOC, port) and echoes the nonce.
PlainRequest = tuple[bytes, int, bytes, bytes, int, "int | None"]

_ECM_WITHOUT_FLAGS = bytes([MessageType.ENCAPSULATED_CONTROL_MESSAGE << 4, 0, 0, 0])
# Inner IP and UDP headers and the Map-Request up to its Source-EID-AFI, in one read:
# (total or payload length, fragment | next header, ...) src, dst, sport, UDP length,
# UDP checksum, Map-Request type word, nonce, Source-EID-AFI.
_IPV4_HEAD = struct.Struct("!xxHxxHxBxx4s4sHxxHHI8sH")
_IPV6_HEAD = struct.Struct("!xxxxHBx16s16sHxxHHI8sH")
#: An Instance-ID LCAF after its AFI, up to its address: rsvd1, flags, type, IID mask-len, length,
#: instance-ID, AFI (the restore reads stored records with it too).
IID_LCAF_BODY = struct.Struct("!BBBBHIH")

_UDP = 17
_PSEUDO_V4_PROTOCOL = bytes((0, _UDP))
_PSEUDO_V6_PROTOCOL = bytes((0, 0, 0, _UDP))
_AFI_LCAF = int(Afi.LCAF)  # plain ints: compared and hashed per request
_LCAF_INSTANCE_ID = int(LcafType.INSTANCE_ID)
_ADDRESS_BYTES = {int(Afi.IPV4): 4, int(Afi.IPV6): 16}  # AFI -> address length
_SOURCE_EID_BYTES = {int(Afi.NONE): 0, **_ADDRESS_BYTES}  # the Source EID is skipped, not read
# The word of a plain request: type 1, IRC 0, one record; the M, P and D
# bits clear (they change what is answered).  The others (A, S, p, s, L and
# the reserved bits) change nothing a Map-Resolver does, as in the full path;
# the I bit adds the xTR-ID and site-ID at the end (`_TRAILER` bytes).
_WORD_MASK = (0xF << 28) | (1 << 26) | (1 << 25) | (1 << 13) | (0x1F << 8) | 0xFF
_WORD_PLAIN = (MessageType.MAP_REQUEST << 28) | 1
_I_BIT = 1 << 20
_N_BIT = 0x80  # of an EID-record's first byte
_TRAILER = 24  # xTR-ID (16 bytes) and site-ID (8)
_AFI_IPV4 = int(Afi.IPV4)
#: The request most ITRs send, whole: ECM word, inner IPv4 header without options, UDP header, the
#: Map-Request word and nonce, no Source EID (AFI 0), one IPv4 ITR-RLOC, one record for an IPv4
#: host (N bit and reserved skipped: without the I bit they change nothing), no xTR-ID.
_V4_HOST = struct.Struct("!4sBxHxxHxBxx4s4sHxxHHI8sHH4sxBH4s")
_HOST_WORD_MASK = _WORD_MASK | _I_BIT  # that shape has no xTR-ID: the I bit clear


def read_plain_request(payload: bytes) -> PlainRequest | None:
    """The fields of a plain ECM Map-Request, or None: decode it in full.

    Checksums are summed as one big integer: 2**16 = 1 (mod 0xffff), so a
    valid ones'-complement sum (0xffff) is a multiple of 0xffff.
    """
    size = len(payload)
    if size == _V4_HOST.size:  # the commonest shape of all, in one read (the general walk below agrees)
        ecm, vihl, total, fragment, protocol, source, destination, port, udp_length, checksum, word, nonce, \
            source_afi, rloc_afi, rloc, mask_len, afi, eid = _V4_HOST.unpack(payload)
        if ecm == _ECM_WITHOUT_FLAGS and vihl == 0x45 and total == 56 and protocol == _UDP and not fragment & 0x3FFF \
                and udp_length == 36 and word & _HOST_WORD_MASK == _WORD_PLAIN and source_afi == 0 \
                and rloc_afi == _AFI_IPV4 and mask_len == 32 and afi == _AFI_IPV4 \
                and not int.from_bytes(payload[4:24], "big") % 0xFFFF:
            if not checksum or not int.from_bytes(source + destination + _PSEUDO_V4_PROTOCOL + payload[28:30]
                                                  + payload[24:], "big") % 0xFFFF:
                return nonce, 0, eid, rloc, port, None
            return None
    if size < 46 or not payload.startswith(_ECM_WITHOUT_FLAGS):
        return None
    version = payload[4]
    if version == 0x45:  # IPv4 without options
        total, fragment, protocol, source, destination, port, udp_length, checksum, word, nonce, source_afi = \
            _IPV4_HEAD.unpack_from(payload, 4)
        if total != size - 4 or protocol != _UDP or fragment & 0x3FFF or udp_length != size - 24 \
                or word & _WORD_MASK != _WORD_PLAIN or int.from_bytes(payload[4:24], "big") % 0xFFFF:
            return None
        if checksum:
            pseudo = source + destination + _PSEUDO_V4_PROTOCOL + payload[28:30] + payload[24:]
            if int.from_bytes(pseudo if udp_length % 2 == 0 else pseudo + b"\0", "big") % 0xFFFF:
                return None
        at = 46
    elif version >> 4 == 6:
        if size < 66:
            return None
        payload_length, next_header, source, destination, port, udp_length, checksum, word, nonce, source_afi = \
            _IPV6_HEAD.unpack_from(payload, 4)
        if next_header != _UDP or payload_length != size - 44 or udp_length != size - 44 \
                or word & _WORD_MASK != _WORD_PLAIN:
            return None
        if checksum:
            pseudo = source + destination + udp_length.to_bytes(4, "big") + _PSEUDO_V6_PROTOCOL + payload[44:]
            if int.from_bytes(pseudo if udp_length % 2 == 0 else pseudo + b"\0", "big") % 0xFFFF:
                return None
        at = 66
    else:
        return None
    skip = _SOURCE_EID_BYTES.get(source_afi)
    if skip is None:  # an ITR in an instance-ID names its source as [iid]address
        lcaf = _instance_id_lcaf(payload, at) if source_afi == _AFI_LCAF else None
        if lcaf is None:
            return None
        skip = 12 + lcaf[1]
    at += skip
    if size < at + 6:
        return None
    rloc_bytes = _ADDRESS_BYTES.get((payload[at] << 8) | payload[at + 1])
    if rloc_bytes is None:
        return None
    rloc = payload[at + 2 : at + 2 + rloc_bytes]
    at += 2 + rloc_bytes
    if size < at + 4:  # record: N bit / reserved, EID mask-len, EID-Prefix-AFI
        return None
    notify = payload[at] & _N_BIT
    mask_len = payload[at + 1]
    afi = (payload[at + 2] << 8) | payload[at + 3]
    at += 4
    if afi == _AFI_LCAF:
        lcaf = _instance_id_lcaf(payload, at)
        if lcaf is None:
            return None
        instance_id, eid_bytes = lcaf
        at += 12
    else:
        instance_id = 0
        eid_bytes = _ADDRESS_BYTES.get(afi)
        if eid_bytes is None:
            return None
    end = at + eid_bytes
    if mask_len != 8 * eid_bytes:
        return None
    if word & _I_BIT:  # an xTR-ID: the N bit asks to subscribe (without the I bit it is ignored)
        if size != end + _TRAILER:
            return None
        return nonce, instance_id, payload[at:end], rloc, port, \
            int.from_bytes(payload[end:end + 16], "big") if notify else None
    if size != end:
        return None
    return nonce, instance_id, payload[at:], rloc, port, None


class PlainRequests:
    """`read_plain_request`, remembering what it read from requests that differ only by their nonce.

    An ITR asks for the same destinations again and again, and its requests
    differ only by the nonce and, with it, the inner UDP checksum.  What the
    reader returns, and whether it accepts, depends on every other byte, on
    the IP header checksum (made of those bytes) and on the UDP checksum,
    which is summed again from the remembered sum of the rest, the new
    nonce and the new checksum: every answer is `read_plain_request`'s.
    Bounded: emptied when full (one refill).
    """

    __slots__ = ("capacity", "_known")

    def __init__(self, capacity: int = 16384) -> None:
        self.capacity = capacity
        # request without nonce and UDP checksum -> (instance-ID, EID, ITR-RLOC, port, xTR-ID or None,
        # ones'-complement sum of the rest of what the UDP checksum covers, None until needed)
        self._known: dict[bytes, tuple] = {}

    def __len__(self) -> int:
        return len(self._known)

    def read(self, payload: bytes) -> PlainRequest | None:
        if len(payload) < 46:
            return None
        version = payload[4]
        if version == 0x45:
            check_at, nonce_at = 30, 36
        elif version >> 4 == 6:
            check_at, nonce_at = 50, 56
        else:
            return None
        key = payload[:check_at] + payload[check_at + 2:nonce_at] + payload[nonce_at + 8:]
        known = self._known.get(key)
        if known is None:
            request = read_plain_request(payload)
            if request is not None:
                if len(self._known) >= self.capacity:
                    self._known = {}
                self._known[key] = (*request[1:], None)
            return request
        iid, eid, rloc, port, subscriber, rest = known
        nonce = payload[nonce_at:nonce_at + 8]
        check = payload[check_at:check_at + 2]
        if check != b"\0\0":  # else no checksum, accepted as the full reader accepts it
            if rest is None:  # the sum of the rest, from this request (so: checked in full once)
                total = _udp_sum(payload, version == 0x45)
                if total:
                    return None
                rest = (-int.from_bytes(check, "big") - int.from_bytes(nonce, "big")) % 0xFFFF
                self._known[key] = (iid, eid, rloc, port, subscriber, rest)
            elif (rest + int.from_bytes(check, "big") + int.from_bytes(nonce, "big")) % 0xFFFF:
                return None
        return nonce, iid, eid, rloc, port, subscriber


def _udp_sum(payload: bytes, ipv4: bool) -> int:
    """The ones'-complement sum (mod 0xffff) of the inner UDP datagram and its pseudo-header: 0 when valid.

    The nonce and the checksum field sit at even offsets of it, so each adds its value mod 0xffff."""
    if ipv4:
        pseudo = payload[16:24] + _PSEUDO_V4_PROTOCOL + payload[28:30] + payload[24:]
    else:
        pseudo = payload[12:44] + (len(payload) - 44).to_bytes(4, "big") + _PSEUDO_V6_PROTOCOL + payload[44:]
    return int.from_bytes(pseudo if len(pseudo) % 2 == 0 else pseudo + b"\0", "big") % 0xFFFF


def _instance_id_lcaf(payload: bytes, at: int) -> tuple[int, int] | None:
    """(instance-ID, address length) of the Instance-ID LCAF body at `at` (after its AFI), in the one
    form the full decoder reads as a single EID: no flags, not a range, an IPv4 or IPv6 address inside."""
    if len(payload) < at + 12:
        return None
    rsvd1, flags, lcaf_type, iid_mask_len, length, instance_id, afi = IID_LCAF_BODY.unpack_from(payload, at)
    address_bytes = _ADDRESS_BYTES.get(afi)
    if rsvd1 or flags or lcaf_type != _LCAF_INSTANCE_ID or iid_mask_len not in (0, 32) or address_bytes is None \
            or length != 6 + address_bytes:
        return None
    return instance_id, address_bytes


# ---------------------------------------------------------------------------- peeks for shedding

_AFI_LENGTHS = {0: 0, **_ADDRESS_BYTES}  # AFI -> address bytes after it; LCAFs carry their own length


def _skip_address(payload: bytes, at: int) -> int:
    """The offset after the AFI-prefixed address at `at`, or -1 when its length is not known here."""
    if len(payload) < at + 2:
        return -1
    afi = (payload[at] << 8) | payload[at + 1]
    length = _AFI_LENGTHS.get(afi)
    if length is not None:
        return at + 2 + length
    if afi == _AFI_LCAF and len(payload) >= at + 8:
        return at + 8 + ((payload[at + 6] << 8) | payload[at + 7])
    return -1


def read_subscriber(payload: bytes) -> int | None:
    """The xTR-ID of an ECM Map-Request that asks to subscribe (I bit, and the N bit on its first
    EID-record), or None for anything else or anything this walk cannot follow.

    The xTR-ID and site-ID end the Map-Request, and the full decoder holds the
    inner IP and UDP lengths to the end of the datagram: they are its last 24
    bytes, whatever the records hold.
    """
    size = len(payload)
    if size < 4 + 20 + 8 + 12 + _TRAILER or payload[0] >> 4 != MessageType.ENCAPSULATED_CONTROL_MESSAGE:
        return None
    version = payload[4] >> 4
    if version == 4:
        at = 4 + (payload[4] & 0x0F) * 4 + 8
    elif version == 6 and payload[10] == _UDP:
        at = 4 + 40 + 8
    else:
        return None
    if size < at + 12 + _TRAILER:
        return None
    word = int.from_bytes(payload[at:at + 4], "big")
    if word >> 28 != MessageType.MAP_REQUEST or not word & _I_BIT or not word & 0xFF:
        return None
    at += 12
    for _ in range(((word >> 8) & 0x1F) + 2):  # the Source-EID, then the ITR-RLOCs
        at = _skip_address(payload, at)
        if at < 0:
            return None
    if at + 4 > size - _TRAILER or not payload[at] & _N_BIT:
        return None
    return int.from_bytes(payload[size - _TRAILER:size - 8], "big")


#: A Map-Register up to its Authentication Data: type word, nonce, Key ID, Algorithm ID, its length.
_REGISTER_HEAD = struct.Struct("!I8xBBH")
#: An EID-record up to its EID: Record TTL, Locator Count, EID mask-len, ACT/A, Map-Version, EID-Prefix-AFI.
_RECORD_HEAD = struct.Struct("!IBBHHH")


def read_register_eid(payload: bytes) -> tuple[int, int, bytes, int] | None:
    """(Record Count, instance-ID, address bytes, mask length) of a Map-Register's first EID-record,
    as a plain AFI or in an Instance-ID LCAF, or None for anything else."""
    if len(payload) < 16 or payload[0] >> 4 != MessageType.MAP_REGISTER:
        return None
    word, _, _, auth_length = _REGISTER_HEAD.unpack_from(payload)
    at = 16 + auth_length
    if not word & 0xFF or len(payload) < at + _RECORD_HEAD.size:
        return None
    _, _, mask_len, _, _, afi = _RECORD_HEAD.unpack_from(payload, at)
    at += _RECORD_HEAD.size
    instance_id = 0
    if afi == _AFI_LCAF:
        lcaf = _instance_id_lcaf(payload, at)
        if lcaf is None:
            return None
        instance_id, address_bytes = lcaf
        at += 12
    else:
        address_bytes = _ADDRESS_BYTES.get(afi)
        if address_bytes is None:
            return None
    if mask_len > 8 * address_bytes or len(payload) < at + address_bytes:
        return None
    return word & 0xFF, instance_id, payload[at:at + address_bytes], mask_len
