//! The TDX boot event log (ACPI CCEL, `/sys/firmware/acpi/tables/data/CCEL`): a TCG2
//! crypto-agile log. The first event is a SHA-1-format `TCG_PCR_EVENT` whose data is the
//! `TCG_EfiSpecIDEvent` ("Spec ID Event03") listing the digest algorithms and sizes; every
//! later event is a `TCG_PCR_EVENT2` `{mr_index u32, type u32, count u32, (alg u16,
//! digest)…, size u32, data}`. The log area is padded with 0xFF after the last event.
//!
//! Replay: MR index 1..4 → RTMR0..3, each `RTMR = SHA-384(RTMR ‖ digest)` from 48 zero bytes,
//! EV_NO_ACTION events skipped (TCG PC Client FW profile §10.4.5; as go-tdx-guest and dstack's
//! cc-eventlog replay it). MR index 0 is MRTD, which the TDX module measures itself; events
//! logged against it are not replayed. Event data is not re-hashed: the digest is the claim,
//! and the RTMR comparison is what checks it.

use conclave_attestation::Measurement;
use sha2::{Digest, Sha384};

use crate::MeasureError;

/// The largest log accepted (CCEL's area is 64 KiB to 256 KiB).
pub const MAX_CCEL_BYTES: usize = 16 << 20;
/// Algorithms a log header may declare.
const MAX_ALGORITHMS: u32 = 16;

const EV_NO_ACTION: u32 = 3;
const TPM_ALG_SHA384: u16 = 0x000c;
const SPEC_ID_SIGNATURE: &[u8; 16] = b"Spec ID Event03\0";

/// One measured event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CcelEvent {
    /// Byte offset of the event in the log.
    pub offset: usize,
    /// CC MR index: 0 MRTD, 1..4 RTMR0..3.
    pub mr_index: u32,
    /// TCG event type (EV_SEPARATOR 4, EV_EFI_VARIABLE_DRIVER_CONFIG 0x80000001, ...).
    pub event_type: u32,
    /// The SHA-384 digest, if the event carries one.
    pub sha384: Option<Measurement>,
    /// Length of the event data.
    pub data_len: usize,
}

/// A parsed log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventLog {
    /// `(TPM_ALG_ID, digest size)` from the header.
    pub algorithms: Vec<(u16, u16)>,
    /// The events after the header, in order.
    pub events: Vec<CcelEvent>,
    /// Bytes up to the end of the last event (the rest is padding).
    pub used: usize,
}

/// RTMR values replayed from a log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtmrReplay {
    /// RTMR0..3.
    pub rtmrs: [Measurement; 4],
    /// How many events extended each.
    pub extends: [usize; 4],
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], MeasureError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        let slice =
            end.and_then(|e| self.bytes.get(self.pos..e))
                .ok_or(MeasureError::CcelTruncated {
                    what,
                    offset: self.pos,
                })?;
        self.pos += n;
        Ok(slice)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, MeasureError> {
        Ok(self.take(1, what)?.first().copied().unwrap_or(0))
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, MeasureError> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, MeasureError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn rest(&self) -> &'a [u8] {
        self.bytes.get(self.pos..).unwrap_or_default()
    }
}

fn no_spec_id(detail: impl Into<String>) -> MeasureError {
    MeasureError::CcelNoSpecId {
        detail: detail.into(),
    }
}

/// The header event: returns the declared algorithms.
fn parse_header(r: &mut Reader<'_>) -> Result<Vec<(u16, u16)>, MeasureError> {
    let _mr_index = r.u32("header event")?;
    let event_type = r.u32("header event")?;
    if event_type != EV_NO_ACTION {
        return Err(no_spec_id(format!(
            "first event has type {event_type:#x}, not EV_NO_ACTION"
        )));
    }
    r.take(20, "header event digest")?;
    let size = r.u32("header event")? as usize;
    let mut s = Reader {
        bytes: r.take(size, "Spec ID event data")?,
        pos: 0,
    };
    if s.take(16, "Spec ID signature")? != SPEC_ID_SIGNATURE {
        return Err(no_spec_id("signature is not \"Spec ID Event03\""));
    }
    s.take(8, "Spec ID event")?; // platformClass u32, version minor/major/errata u8, uintnSize u8
    let count = s.u32("Spec ID algorithm count")?;
    if count == 0 || count > MAX_ALGORITHMS {
        return Err(no_spec_id(format!(
            "{count} algorithms declared, expected 1..={MAX_ALGORITHMS}"
        )));
    }
    let mut algorithms = Vec::new();
    for _ in 0..count {
        let alg = s.u16("Spec ID algorithm")?;
        let size = s.u16("Spec ID algorithm")?;
        algorithms.push((alg, size));
    }
    let vendor = s.u8("Spec ID vendor info size")?;
    s.take(usize::from(vendor), "Spec ID vendor info")?;
    if !algorithms.contains(&(TPM_ALG_SHA384, 48)) {
        return Err(no_spec_id(
            "no SHA-384 (algorithm 0x000c, 48 bytes), which TDX RTMRs use",
        ));
    }
    Ok(algorithms)
}

/// Parses a CCEL event log. The log ends at the end of the bytes, at an MR index of
/// 0xFFFFFFFF (the area's 0xFF padding) or where only zero bytes remain.
pub fn parse(bytes: &[u8]) -> Result<EventLog, MeasureError> {
    if bytes.len() > MAX_CCEL_BYTES {
        return Err(MeasureError::CcelTooLarge {
            len: bytes.len(),
            max: MAX_CCEL_BYTES,
        });
    }
    let mut r = Reader { bytes, pos: 0 };
    let algorithms = parse_header(&mut r)?;
    let mut events = Vec::new();
    loop {
        let rest = r.rest();
        if rest.is_empty()
            || rest.starts_with(&[0xff; 4])
            || rest.iter().all(|&b| b == 0)
            || (rest.len() < 4 && rest.iter().all(|&b| b == 0xff))
        {
            break;
        }
        let offset = r.pos;
        let mr_index = r.u32("event header")?;
        let event_type = r.u32("event header")?;
        let count = r.u32("event digest count")?;
        if count == 0 || count as usize > algorithms.len() {
            return Err(MeasureError::CcelDigestCount {
                offset,
                count,
                declared: algorithms.len(),
            });
        }
        let mut sha384 = None;
        for _ in 0..count {
            let alg = r.u16("event digest algorithm")?;
            let size = algorithms
                .iter()
                .find(|(a, _)| *a == alg)
                .map(|(_, s)| usize::from(*s))
                .ok_or(MeasureError::CcelUnknownAlgorithm { offset, alg })?;
            let digest = r.take(size, "event digest")?;
            if alg == TPM_ALG_SHA384 {
                sha384 = Measurement::from_slice(digest).ok();
            }
        }
        let data_len = r.u32("event data size")? as usize;
        r.take(data_len, "event data")?;
        events.push(CcelEvent {
            offset,
            mr_index,
            event_type,
            sha384,
            data_len,
        });
    }
    Ok(EventLog {
        algorithms,
        events,
        used: r.pos,
    })
}

impl EventLog {
    /// Replays the measured events into RTMR0..3.
    pub fn replay(&self) -> Result<RtmrReplay, MeasureError> {
        let mut rtmrs = [[0u8; 48]; 4];
        let mut extends = [0usize; 4];
        for e in &self.events {
            if e.event_type == EV_NO_ACTION || e.mr_index == 0 {
                continue;
            }
            let i = (e.mr_index as usize)
                .checked_sub(1)
                .filter(|&i| i < 4)
                .ok_or(MeasureError::CcelMrIndex {
                    offset: e.offset,
                    index: e.mr_index,
                })?;
            let digest = e
                .sha384
                .ok_or(MeasureError::CcelNoSha384 { offset: e.offset })?;
            let mut h = Sha384::new();
            h.update(rtmrs[i]);
            h.update(digest.0);
            rtmrs[i] = h.finalize().into();
            extends[i] += 1;
        }
        Ok(RtmrReplay {
            rtmrs: rtmrs.map(Measurement),
            extends,
        })
    }
}

/// Parses and replays a CCEL event log.
pub fn replay(bytes: &[u8]) -> Result<RtmrReplay, MeasureError> {
    parse(bytes)?.replay()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header declaring SHA-384 only, then the given events `(mr_index, type, digest byte)`.
    fn log(events: &[(u32, u32, u8)]) -> Vec<u8> {
        let mut spec = SPEC_ID_SIGNATURE.to_vec();
        spec.extend_from_slice(&[0, 0, 0, 0, 0, 2, 0, 2]);
        spec.extend_from_slice(&1u32.to_le_bytes());
        spec.extend_from_slice(&TPM_ALG_SHA384.to_le_bytes());
        spec.extend_from_slice(&48u16.to_le_bytes());
        spec.push(0);
        let mut b = Vec::new();
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&EV_NO_ACTION.to_le_bytes());
        b.extend_from_slice(&[0; 20]);
        b.extend_from_slice(&(spec.len() as u32).to_le_bytes());
        b.extend_from_slice(&spec);
        for &(mr, ty, d) in events {
            b.extend_from_slice(&mr.to_le_bytes());
            b.extend_from_slice(&ty.to_le_bytes());
            b.extend_from_slice(&1u32.to_le_bytes());
            b.extend_from_slice(&TPM_ALG_SHA384.to_le_bytes());
            b.extend_from_slice(&[d; 48]);
            b.extend_from_slice(&3u32.to_le_bytes());
            b.extend_from_slice(b"abc");
        }
        b
    }

    #[test]
    fn replay_extends_from_zero_and_skips_no_action_and_mrtd() {
        let mut bytes = log(&[
            (1, 4, 0xaa),
            (1, EV_NO_ACTION, 0xbb),
            (0, 4, 0xcc),
            (4, 4, 0xdd),
        ]);
        bytes.extend_from_slice(&[0xff; 100]);
        let r = replay(&bytes).unwrap();
        let mut h = Sha384::new();
        h.update([0u8; 48]);
        h.update([0xaa; 48]);
        assert_eq!(r.rtmrs[0].0, <[u8; 48]>::from(h.finalize()));
        assert_eq!(r.extends, [1, 0, 0, 1]);
        assert_eq!(r.rtmrs[1], Measurement([0; 48]));
        // Zero padding ends the log too.
        let mut zero_padded = log(&[(1, 4, 0xaa)]);
        zero_padded.extend_from_slice(&[0; 64]);
        assert_eq!(replay(&zero_padded).unwrap().rtmrs[0], r.rtmrs[0]);
    }

    #[test]
    fn malformed_logs_are_named_errors() {
        assert!(matches!(
            replay(&log(&[(5, 4, 1)])),
            Err(MeasureError::CcelMrIndex { index: 5, .. })
        ));
        let full = log(&[(1, 4, 1)]);
        assert!(matches!(
            replay(&full[..full.len() - 1]),
            Err(MeasureError::CcelTruncated { .. })
        ));
        assert!(matches!(
            replay(&[0, 0, 0, 0, 3, 0, 0, 0, 0, 0]),
            Err(MeasureError::CcelTruncated { .. })
        ));
        assert!(matches!(
            replay(&[]),
            Err(MeasureError::CcelTruncated { .. })
        ));
        assert!(matches!(
            replay(&[0u8; 64]),
            Err(MeasureError::CcelNoSpecId { .. })
        ));
        let mut no_spec = full.clone();
        no_spec[32] = b'X';
        assert!(matches!(
            replay(&no_spec),
            Err(MeasureError::CcelNoSpecId { .. })
        ));
        // An algorithm the header does not declare.
        let mut unknown = full.clone();
        let at = full.len() - 3 - 4 - 48 - 2;
        unknown[at] = 0x0b;
        assert!(matches!(
            replay(&unknown),
            Err(MeasureError::CcelUnknownAlgorithm { alg: 0x0b, .. })
        ));
        // A digest count above what the header declares.
        let mut count = full.clone();
        count[at - 4] = 2;
        assert!(matches!(
            replay(&count),
            Err(MeasureError::CcelDigestCount { count: 2, .. })
        ));
    }
}
