"""The memoising HPACK encoder and decoder must be byte-for-byte hpack's own.

A sequence of header lists drawn from a small pool (so that blocks repeat, as real
traffic does) is encoded by ``CachingEncoder`` and by hpack's ``Encoder`` side by side;
every block must be identical, including after table-size changes and with sensitive
(never-indexed) headers. The blocks are then decoded by ``CachingDecoder`` and by
hpack's ``Decoder``: identical header lists, identical tables, identical errors.
"""

from __future__ import annotations

import hpack
import pytest
from hpack import NeverIndexedHeaderTuple
from hypothesis import given, settings
from hypothesis import strategies as st

from h2pool._http2.hpack import CachingDecoder, CachingEncoder, HeaderListTooLarge

pytestmark = pytest.mark.timeout(120)

_NAMES = [b":path", b"accept", b"x-a", b"date", b"authorization"]
_VALUES = [b"/", b"/a", b"*/*", b"v" * 40, b"Mon, 01 Jan", b"Tue, 02 Jan", b"secret"]

_header = st.tuples(st.sampled_from(_NAMES), st.sampled_from(_VALUES), st.booleans()).map(
    lambda t: (
        NeverIndexedHeaderTuple(t[0], t[1]) if t[2] and t[0] == b"authorization" else (t[0], t[1])
    )
)
_lists = st.lists(st.lists(_header, min_size=1, max_size=6), min_size=1, max_size=6)
_steps = st.lists(
    st.one_of(
        st.tuples(st.just("send"), st.integers(0, 5)),
        st.tuples(st.just("resize"), st.sampled_from([0, 64, 200, 4096])),
    ),
    max_size=40,
)


def _outcome(decoder: hpack.Decoder, block: bytes) -> object:
    try:
        return decoder.decode(block, raw=True)
    except hpack.HPACKError as exc:  # e.g. hpack drops a repeated resize: both must agree
        return type(exc)


@settings(max_examples=300, deadline=None)
@given(pool=_lists, steps=_steps)
def test_encoder_and_decoder_match_hpack(pool: list, steps: list) -> None:
    mine, ref = CachingEncoder(), hpack.Encoder()
    my_dec, ref_dec = CachingDecoder(65536), hpack.Decoder(65536)
    for kind, arg in steps:
        if kind == "resize":
            mine.header_table_size = ref.header_table_size = arg
            my_dec.max_allowed_table_size = ref_dec.max_allowed_table_size = max(arg, 4096)
            continue
        headers = pool[arg % len(pool)]
        block = mine.encode(list(headers))
        assert block == ref.encode(list(headers))
        assert _outcome(my_dec, block) == _outcome(ref_dec, block)
        assert list(my_dec.header_table.dynamic_entries) == list(
            ref_dec.header_table.dynamic_entries
        )
        assert list(mine.header_table.dynamic_entries) == list(ref.header_table.dynamic_entries)


def test_repeated_blocks_are_served_from_the_cache() -> None:
    """The point of the cache: a repeated request encodes once the table has settled, and
    a repeated response decodes once."""
    enc, dec = CachingEncoder(), CachingDecoder(65536)
    headers = [(b":method", b"GET"), (b":path", b"/x"), (b"accept", b"*/*")]
    first = enc.encode(list(headers))  # adds :path and accept to the table
    second = enc.encode(list(headers))  # fully indexed: cached
    assert first != second
    assert enc.encode(list(headers)) is second
    dec.decode(first, raw=True)
    out = dec.decode(second, raw=True)
    again = dec.decode(second, raw=True)
    assert again == out == headers and again is not out  # a fresh list each time
    assert dec._cache  # the cache holds the block


def test_oversized_header_list_is_refused_even_when_cached() -> None:
    enc, dec = CachingEncoder(), CachingDecoder(65536)
    headers = [(b"x-big", b"v" * 1000)]
    enc.encode(list(headers))
    block = enc.encode(list(headers))
    ref = hpack.Decoder(65536)
    first = hpack.Encoder().encode(list(headers))
    assert dec.decode(first, raw=True) == ref.decode(first, raw=True)
    assert dec.decode(block, raw=True) == headers
    dec.max_header_list_size = 500
    # Over the limit but decoded in full (the table stays in step): a stream error.
    with pytest.raises(HeaderListTooLarge) as info:
        dec.decode(block, raw=True)
    assert (info.value.size, info.value.limit) == (1037, 500)
    # Far over it (16x): decoding stops at once, an HPACK bomb.
    dec.max_header_list_size = 60
    with pytest.raises(hpack.OversizedHeaderListError):
        dec.decode(hpack.Encoder().encode(list(headers)), raw=True)


def test_sensitive_headers_are_not_served_a_plain_block() -> None:
    """NeverIndexedHeaderTuple equals the plain tuple, so a cache keyed on equality alone
    would hand it the plain header's block; hpack encodes it as never-indexed."""
    enc = CachingEncoder()
    plain = [(b"x-token", b"secret")]
    sensitive = [NeverIndexedHeaderTuple(b"x-token", b"secret")]
    ref = hpack.Encoder()
    for headers in (sensitive, sensitive, plain, plain, sensitive):
        assert enc.encode(list(headers)) == ref.encode(list(headers))
    fresh = CachingEncoder()
    assert fresh.encode(list(sensitive))[0] & 0xF0 == 0x10  # never indexed, RFC 7541 §6.2.3


def test_nginx_style_blocks_with_a_zero_table_are_cached() -> None:
    """nginx announces a table size of 0 and still sends incremental-indexing fields;
    adding to an empty zero-size table changes nothing, so the block stays cached."""
    block = bytes.fromhex(
        "887689aa6355e580ae212e1f6197df3dbf4a09c5349fba82009c502cdc69ab8c814c5a37ff"
        "5f87497ca58ae819aa5c023133"
    )
    dec, ref = CachingDecoder(65536), hpack.Decoder(65536)
    first_block = bytes([0x20]) + block  # nginx's first block carries the size update
    assert dec.decode(first_block, raw=True) == ref.decode(first_block, raw=True)
    first = dec.decode(block, raw=True)
    assert dec._cache  # a repeat is served from here
    assert dec.decode(block, raw=True) == first == ref.decode(block, raw=True)
    assert (b"content-length", b"13") in first


def test_blocks_with_a_never_indexed_field_are_cached_apart_from_plain_ones() -> None:
    """A request carrying the same bearer token each time is encoded once; its block is
    never handed to the plain field that compares equal, nor the other way round."""
    enc, ref = CachingEncoder(), hpack.Encoder()
    base = [(b":method", b"GET"), (b":path", b"/x")]
    sensitive = [*base, NeverIndexedHeaderTuple(b"authorization", b"Bearer t")]
    plain = [*base, (b"authorization", b"Bearer t")]
    blocks = [enc.encode(list(h)) for h in (sensitive, sensitive, sensitive)]
    assert blocks == [ref.encode(list(sensitive)) for _ in range(3)]
    assert enc.encode(list(sensitive)) is blocks[2]  # served from the cache
    assert enc.encode(list(plain)) == ref.encode(list(plain))  # indexes it: table changes
    for headers in (sensitive, plain, plain, sensitive):
        assert enc.encode(list(headers)) == ref.encode(list(headers))
