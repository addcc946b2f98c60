//! RTP header rewriting per outgoing leg (Janus calls this the "switching context").
//!
//! Each outgoing leg has our own SSRC and its own sequence/timestamp space. Packets keep their
//! relative seq/ts spacing (gaps and reordering are preserved) while the incoming source stays
//! the same; when the incoming SSRC changes (the PBX switched to music on hold, a transfer
//! brought a new source) the outgoing numbers continue from where they were, with the marker
//! bit set. Payload types are mapped codec -> codec and telephone-event -> telephone-event;
//! anything else is dropped (the browser was only offered those two).
//!
//! Arithmetic on wire values: lengths and offsets are checked (a hostile header gives `None`,
//! never a panic); sequence numbers and timestamps are modular by definition (RFC 3550 §5.1:
//! they wrap), so their arithmetic wraps on purpose and nothing else.

use bytes::{BufMut, Bytes, BytesMut};

/// The parts of an RTP packet we relay. CSRCs and header extensions are not carried over (we
/// negotiated none on either leg); padding is stripped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RtpPacket {
    pub(crate) marker: bool,
    pub(crate) pt: u8,
    pub(crate) seq: u16,
    pub(crate) ts: u32,
    pub(crate) ssrc: u32,
    pub(crate) payload: Bytes,
}

impl RtpPacket {
    /// Parses an RTP datagram; `None` for anything that is not RTP version 2 (RTCP on a muxed
    /// port has PT 200-204 after the marker bit, which we also refuse).
    pub(crate) fn parse(buf: &[u8]) -> Option<Self> {
        // Every offset below comes from the wire: checked, so a hostile length is `None`.
        let head: &[u8; 12] = buf.get(..12)?.try_into().ok()?;
        if head[0] >> 6 != 2 {
            return None;
        }
        let padding = head[0] & 0x20 != 0;
        let extension = head[0] & 0x10 != 0;
        let csrc = usize::from(head[0] & 0x0f);
        let marker = head[1] & 0x80 != 0;
        let pt = head[1] & 0x7f;
        if (72..=76).contains(&pt) {
            return None; // RTCP SR/RR/SDES/BYE/APP seen with the marker bit
        }
        let mut off = csrc.checked_mul(4)?.checked_add(12)?;
        if extension {
            let len = buf.get(off.checked_add(2)?..off.checked_add(4)?)?;
            let words = usize::from(u16::from_be_bytes([len[0], len[1]]));
            off = off.checked_add(4)?.checked_add(words.checked_mul(4)?)?;
        }
        let mut end = buf.len();
        if padding {
            // The last byte counts the padding, itself included: 0 is not a valid count.
            let pad = usize::from(*buf.last()?);
            end = end.checked_sub(pad).filter(|_| pad > 0)?;
        }
        let payload = buf.get(off..end)?;
        Some(Self {
            marker,
            pt,
            seq: u16::from_be_bytes([head[2], head[3]]),
            ts: u32::from_be_bytes([head[4], head[5], head[6], head[7]]),
            ssrc: u32::from_be_bytes([head[8], head[9], head[10], head[11]]),
            payload: Bytes::copy_from_slice(payload),
        })
    }

    /// Serialises with a plain 12-byte header.
    pub(crate) fn write(&self, out: &mut BytesMut) {
        out.reserve(12 + self.payload.len());
        out.put_u8(0x80);
        out.put_u8(u8::from(self.marker) << 7 | (self.pt & 0x7f));
        out.put_u16(self.seq);
        out.put_u32(self.ts);
        out.put_u32(self.ssrc);
        out.put_slice(&self.payload);
    }
}

/// Payload-type map of one direction: (incoming, outgoing) for the codec and for
/// telephone-event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PtMap {
    pub(crate) codec: (u8, u8),
    pub(crate) dtmf: Option<(u8, u8)>,
}

impl PtMap {
    /// The outgoing PT and whether this is a DTMF packet; `None` drops the packet.
    pub(crate) fn map(&self, pt: u8) -> Option<(u8, bool)> {
        if pt == self.codec.0 {
            return Some((self.codec.1, false));
        }
        match self.dtmf {
            Some((i, o)) if i == pt => Some((o, true)),
            _ => None,
        }
    }
}

/// Samples per 20 ms at 8 kHz: the timestamp step assumed across a source switch.
const TS_STEP: u32 = 160;

/// The header state of one outgoing leg.
#[derive(Debug)]
pub(crate) struct Rewriter {
    ssrc: u32,
    map: PtMap,
    /// Current incoming source and the offsets that map it onto our numbering.
    source: Option<Source>,
    last_seq: u16,
    last_ts: u32,
}

#[derive(Debug, Clone, Copy)]
struct Source {
    ssrc: u32,
    seq_off: u16,
    ts_off: u32,
}

/// What [`Rewriter::rewrite`] decided.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Rewritten {
    /// Send this packet.
    Send { pkt: RtpPacket, dtmf: bool },
    /// A payload type the leg did not negotiate.
    Dropped,
}

impl Rewriter {
    /// `ssrc` is this leg's own SSRC; `seq0`/`ts0` the first outgoing numbers (random in
    /// production, fixed in tests).
    pub(crate) fn new(ssrc: u32, map: PtMap, seq0: u16, ts0: u32) -> Self {
        Self {
            ssrc,
            map,
            source: None,
            last_seq: seq0.wrapping_sub(1),
            last_ts: ts0.wrapping_sub(TS_STEP),
        }
    }

    /// The timestamp of the newest packet sent (for RTCP SR).
    pub(crate) fn last_ts(&self) -> u32 {
        self.last_ts
    }

    /// Re-negotiation may change the PTs (never the SSRC or the numbering).
    pub(crate) fn set_map(&mut self, map: PtMap) {
        self.map = map;
    }

    /// Rewrites one packet's header for this leg.
    pub(crate) fn rewrite(&mut self, mut pkt: RtpPacket) -> Rewritten {
        let Some((pt, dtmf)) = self.map.map(pkt.pt) else {
            return Rewritten::Dropped;
        };
        let src = match self.source {
            Some(s) if s.ssrc == pkt.ssrc => s,
            _ => {
                // New source: continue right after the last packet we sent.
                let s = Source {
                    ssrc: pkt.ssrc,
                    seq_off: self.last_seq.wrapping_add(1).wrapping_sub(pkt.seq),
                    ts_off: self.last_ts.wrapping_add(TS_STEP).wrapping_sub(pkt.ts),
                };
                pkt.marker |= self.source.is_some();
                self.source = Some(s);
                s
            }
        };
        pkt.pt = pt;
        pkt.seq = pkt.seq.wrapping_add(src.seq_off);
        pkt.ts = pkt.ts.wrapping_add(src.ts_off);
        pkt.ssrc = self.ssrc;
        // Track the newest (not a reordered older) packet as the continuation point.
        if pkt.seq.wrapping_sub(self.last_seq) < 0x8000 {
            self.last_seq = pkt.seq;
            self.last_ts = pkt.ts;
        }
        Rewritten::Send { pkt, dtmf }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(pt: u8, seq: u16, ts: u32, ssrc: u32) -> RtpPacket {
        RtpPacket {
            marker: false,
            pt,
            seq,
            ts,
            ssrc,
            payload: Bytes::from_static(&[0xff; 160]),
        }
    }

    fn send(r: &mut Rewriter, p: RtpPacket) -> (u8, u16, u32, u32, bool, bool) {
        match r.rewrite(p) {
            Rewritten::Send { pkt, dtmf } => (pkt.pt, pkt.seq, pkt.ts, pkt.ssrc, pkt.marker, dtmf),
            Rewritten::Dropped => panic!("dropped"),
        }
    }

    #[test]
    fn parse_and_write_round_trip() {
        let p = RtpPacket {
            marker: true,
            pt: 8,
            seq: 65535,
            ts: 0xdead_beef,
            ssrc: 7,
            payload: Bytes::from_static(b"abc"),
        };
        let mut b = BytesMut::new();
        p.write(&mut b);
        assert_eq!(b.len(), 15);
        assert_eq!(RtpPacket::parse(&b), Some(p));
    }

    #[test]
    fn parse_table() {
        // (bytes, expected payload or None)
        let mut csrc_ext = vec![0x91, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3]; // V=2, X=1, CC=1
        csrc_ext.extend_from_slice(&[9, 9, 9, 9]); // CSRC
        csrc_ext.extend_from_slice(&[0xbe, 0xde, 0, 1, 1, 2, 3, 4]); // one-word extension
        csrc_ext.extend_from_slice(b"pay");
        let mut padded = vec![0xa0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3];
        padded.extend_from_slice(&[b'x', 0, 0, 3]);
        let table: Vec<(Vec<u8>, Option<&[u8]>)> = vec![
            (csrc_ext, Some(b"pay")),
            (padded, Some(b"x")),
            (vec![0x80, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3], Some(b"")),
            (vec![0x40, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3], None), // version 1
            (vec![0x80, 0, 0, 1], None),                         // short
            (vec![0x80, 0xc8, 0, 6, 0, 0, 0, 2, 0, 0, 0, 3], None), // RTCP SR
            (vec![0xa0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 40], None), // padding past the end
            (vec![0xa0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0], None), // padding count 0
            (vec![0x8f, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3], None), // 15 CSRCs announced, none there
            (
                vec![
                    0x90, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0xbe, 0xde, 0xff, 0xff,
                ],
                None,
            ), // extension of 65535 words
            (
                vec![0x90, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0xbe, 0xde],
                None,
            ), // extension header cut short
        ];
        for (i, (bytes, want)) in table.into_iter().enumerate() {
            let got = RtpPacket::parse(&bytes).map(|p| p.payload.to_vec());
            assert_eq!(got.as_deref(), want, "case {i}");
        }
    }

    #[test]
    fn own_ssrc_pt_map_and_offsets() {
        let map = PtMap {
            codec: (0, 0),
            dtmf: Some((101, 126)),
        };
        let mut r = Rewriter::new(0xabc, map, 1000, 50_000);
        assert_eq!(
            send(&mut r, pkt(0, 7, 320, 55)),
            (0, 1000, 50_000, 0xabc, false, false)
        );
        assert_eq!(
            send(&mut r, pkt(0, 8, 480, 55)),
            (0, 1001, 50_160, 0xabc, false, false)
        );
        assert_eq!(
            send(&mut r, pkt(101, 9, 480, 55)),
            (126, 1002, 50_160, 0xabc, false, true)
        );
        // A gap stays a gap; a late packet keeps its older numbers.
        assert_eq!(send(&mut r, pkt(0, 12, 960, 55)).1, 1005);
        assert_eq!(send(&mut r, pkt(0, 11, 800, 55)).1, 1004);
        assert_eq!(
            r.rewrite(pkt(9, 13, 1120, 55)),
            Rewritten::Dropped,
            "G.722 was not negotiated"
        );
    }

    #[test]
    fn a_new_source_continues_the_numbering_with_the_marker() {
        let map = PtMap {
            codec: (8, 8),
            dtmf: None,
        };
        let mut r = Rewriter::new(1, map, 65534, u32::MAX - 100);
        assert_eq!(send(&mut r, pkt(8, 100, 0, 10)).1, 65534);
        assert_eq!(send(&mut r, pkt(8, 101, 160, 10)).1, 65535);
        let (_, seq, ts, ssrc, marker, _) = send(&mut r, pkt(8, 40_000, 7, 20));
        assert_eq!(
            (seq, ts, ssrc, marker),
            (0, (u32::MAX - 100).wrapping_add(320), 1, true)
        );
        assert_eq!(send(&mut r, pkt(8, 40_001, 167, 20)).1, 1);
    }

    #[test]
    fn remapping_telephone_event_both_ways() {
        let to_pbx = PtMap {
            codec: (0, 0),
            dtmf: Some((126, 101)),
        };
        assert_eq!(to_pbx.map(126), Some((101, true)));
        assert_eq!(to_pbx.map(0), Some((0, false)));
        assert_eq!(to_pbx.map(101), None);
        let no_dtmf = PtMap {
            codec: (8, 8),
            dtmf: None,
        };
        assert_eq!(no_dtmf.map(126), None);
    }
}
