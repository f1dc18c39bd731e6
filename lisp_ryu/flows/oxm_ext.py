"""Open vSwitch match fields Ryu 4.34 does not know, taught to its OpenFlow 1.3 codec.

`nd_reserved` (the 32 bits after an ICMPv6 ND checksum: a Neighbor
Advertisement's R/S/O flags) and `nd_options_type` (the type of the first ND
option) are OVS fields in the ERICOXM class (0x1000, OVS >= 2.11, ovs-fields(7)),
which OVS accepts in an OpenFlow 1.3 set-field action.  The neighbour
responder (flows/neighbour.py) sets both; Ryu must serialise them (and parse
them back from flow stats), so they are added to the field tables of
`ryu.ofproto.ofproto_v1_3` once, on import.
"""

from __future__ import annotations

from ryu.ofproto import ofproto_v1_3 as ofp
from ryu.ofproto import oxm_fields
from ryu.lib import type_desc

ERICOXM_OF = 0x1000


class EricssonExtended(oxm_fields._OxmClass):  # noqa: SLF001 - Ryu's own base for 32-bit OXM classes
    _class = ERICOXM_OF


FIELDS = (
    EricssonExtended("nd_reserved", 1, type_desc.Int4),
    EricssonExtended("nd_options_type", 2, type_desc.Int1),
)


def _register() -> None:
    # oxm_fields.generate() bound the name->field and number->field maps into partials: extend those maps.
    by_name = ofp.oxm_from_user.args[1]
    by_number = ofp.oxm_to_user.args[1]
    for f in FIELDS:
        if f.name not in by_name:
            ofp.oxm_types.append(f)
            by_name[f.name] = f
            by_number[f.num] = f


_register()
